"""The image fixtures ``built_enclave`` and ``running_enclave`` over our nitro-cli, as users meet them.

The cache (one build per content of a Dockerfile directory: the project's ``Dockerfile.enclave``), the
digest's rules, failures in one message, and the teardown (the enclaves a test started are terminated,
their processes gone, even when the run is interrupted). The provider's image served through them is
``tests/integration/test_provider_image.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nitro_sim.enclaves import ImageCache, context_digest, copy_build_context
from nitro_sim.procs import Recorded, alive

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
#: Bound on waiting for a child pytest to get somewhere, or its enclave to go (never asserted as a time).
WAIT_S = 60.0


def _context(dest: Path) -> Path:
    """A copy of the provider image's build context (what build-enclave of the project may read)."""
    return copy_build_context(REPO, dest)


def test_each_directory_content_is_built_once(
    built_enclave: Any,
    _nitro_sim_images: ImageCache,  # noqa: PT019 - its build count is the point
    tmp_path: Path,
) -> None:
    first = built_enclave(_context(tmp_path / "one"))
    builds = _nitro_sim_images.builds
    (tmp_path / "one" / "attestation" / "__pycache__").mkdir(exist_ok=True)  # ignored by .dockerignore
    (tmp_path / "one" / "attestation" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert built_enclave(tmp_path / "one") is first
    assert built_enclave(_context(tmp_path / "two")) is first  # a copy: the same content
    assert _nitro_sim_images.builds == builds
    changed = _context(tmp_path / "three")
    provider = changed / "enclave" / "provider.py"
    provider.write_bytes(provider.read_bytes() + b"\n# one more line\n")
    other = built_enclave(changed)
    assert _nitro_sim_images.builds == builds + 1
    assert other.pcr0 != first.pcr0
    assert other.measurements["PCR1"] == first.measurements["PCR1"]
    assert built_enclave(changed, docker_uri="another:1") is not other  # the URI is in the key


def test_the_digest_keys_on_what_the_build_reads(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM scratch\nCOPY app /app\nCMD ["/app/run"]\n')
    (tmp_path / ".dockerignore").write_text("notes/\n*.log\n!keep.log\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "run").write_text("#!/bin/sh\n")
    base = context_digest(tmp_path, env={})
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("ignored")
    (tmp_path / "build.log").write_text("ignored")
    assert context_digest(tmp_path, env={}) == base
    (tmp_path / "keep.log").write_text("kept by the exception")
    kept = context_digest(tmp_path, env={})
    assert kept != base
    (tmp_path / "app" / "run").chmod(0o755)  # permission bits go into the image
    assert context_digest(tmp_path, env={}) != kept
    assert context_digest(tmp_path, env={"SOURCE_DATE_EPOCH": "1"}) != context_digest(tmp_path, env={})
    (tmp_path / ".dockerignore").write_text("app/run\n")  # the ignore file itself is always read
    assert context_digest(tmp_path, env={}) != kept


def test_a_missing_directory_or_a_failing_build_fails_the_test_in_one_message(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_user="""
        def test_missing(built_enclave, tmp_path):
            built_enclave(tmp_path / "nowhere")

        def test_broken(built_enclave, tmp_path):
            (tmp_path / "Dockerfile").write_text("FROM scratch\\nBOGUS x\\n")
            built_enclave(tmp_path)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*built_enclave: */nowhere: not a directory (name the directory of a Dockerfile)",
            "*nitro-cli build-enclave exited with status *; last lines of its output:",
            "*| *Dockerfile:2*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


SLEEPING_IMAGE = """
import os, signal, time
import pytest

def _image(tmp_path):
    cmd = '["python3", "-c", "import time; time.sleep(600)"]'
    (tmp_path / "Dockerfile").write_text(f"FROM python:3.11-slim\\nCMD {cmd}\\n")
    return tmp_path

def _record(enclave):
    with open(os.environ["PIDS_FILE"] + ".tmp", "w") as out:
        out.write(f"{enclave.process.pid} {enclave.process.token} {enclave.enclave_id}\\n")
    os.replace(os.environ["PIDS_FILE"] + ".tmp", os.environ["PIDS_FILE"])
"""


def _group(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (field 5 of /proc/<pid>/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue
        if fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def test_the_enclaves_a_test_started_are_terminated_after_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = pytester.path / "pids.txt"
    pytester.makepyfile(
        test_user=SLEEPING_IMAGE
        + """
def test_runs(built_enclave, running_enclave, nitro_home, tmp_path):
    enclave = running_enclave(built_enclave(_image(tmp_path)), cpu_count=1, memory_mib=128)
    _record(enclave)
    assert (nitro_home / "enclaves" / enclave.enclave_id).is_dir()

def test_next(nitro_home):
    assert not any(p.name.startswith("i-") for p in (nitro_home / "enclaves").iterdir())
"""
    )
    monkeypatch.setenv("PIDS_FILE", str(pids))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    pid, token, _ = pids.read_text().split()
    assert not alive(Recorded(pid=int(pid), token=int(token)))
    assert _group(int(pid)) == []  # nor its NSM device and app


def test_an_interrupted_run_leaves_no_enclave_running(pytester: pytest.Pytester) -> None:
    pids = pytester.path / "pids.txt"
    pytester.makepyfile(
        test_hang=SLEEPING_IMAGE
        + """
def test_hangs(built_enclave, running_enclave, tmp_path):
    _record(running_enclave(built_enclave(_image(tmp_path)), cpu_count=1, memory_mib=128))
    time.sleep(600)
"""
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_hang.py"],
        cwd=pytester.path,
        env={**os.environ, "PIDS_FILE": str(pids)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not pids.exists() and runner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pids.exists(), f"the child pytest did not reach its test (exit status {runner.poll()})"
        pid, token, _ = pids.read_text().split()
        supervisor = Recorded(pid=int(pid), token=int(token))
        assert alive(supervisor)
        assert len(_group(supervisor.pid)) == 3  # the supervisor, the NSM device, the app
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while _group(supervisor.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(supervisor)
        assert _group(supervisor.pid) == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
