"""The package as users get it (helpers of tests/packaging): the wheel, in fresh virtual environments.

Rules:

- The wheel is built from a copy of the files git would check out here (``git ls-files --cached --others
  --exclude-standard``: a clean clone plus uncommitted work), never from this tree's own ``build/``, whose
  stale files setuptools would pack. ``pip wheel --no-deps`` builds it in pip's isolated build environment,
  with the setuptools ``[build-system]`` names, as ``pip install`` from a source tree or sdist does.
- A user's environment is ``python -m venv`` plus ``pip install`` of that wheel (its dependencies from the
  package index), and its programs run with :func:`user_env`: no ``PYTHONPATH``, no ``VIRTUAL_ENV``, no
  AWS or simulation settings, and no ``PATH`` entry inside this repository, from a working directory
  outside it. Nothing of ours can be imported except through the installed wheel.
- Every command has a bound (:data:`INSTALL_TIMEOUT_S`, :data:`RUN_TIMEOUT_S`), never an asserted time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Bound on a build or an install (the index may be slow; pip's own timeout is per request).
INSTALL_TIMEOUT_S = 600.0
#: Bound on one of a user's commands (their whole test suite included).
RUN_TIMEOUT_S = 300.0
#: What a user's CI installs beside the package for the example's suite (boto3: ``kms_sim.boto3_client``).
USER_TEST_REQUIREMENTS = ("pytest", "boto3")
#: Summaries of the user suites run in this session (name, pytest's counts), shown at the end of the run.
USER_SUITE_SUMMARIES: list[tuple[str, str]] = []


def run(
    argv: list[str], *, timeout: float, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end with its output captured; the caller checks the exit status."""
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd
    )


def checked(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``done`` if it exited 0; otherwise fail with its command and the end of its output."""
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        pytest.fail(f"{' '.join(map(str, done.args))} exited {done.returncode}:\n{tail}", pytrace=False)
    return done


def user_env(venv: Path | None = None, **extra: str) -> dict[str, str]:
    """A user's environment: this one without Python, AWS or simulation settings or paths into the repo,
    with ``venv``'s ``bin`` first on ``PATH``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "NITRO_SIM_", "PYTHON", "VIRTUAL_ENV", "PYTEST_"))
    }
    repo = str(REPO)
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and not p.startswith(repo)]
    if venv is not None:
        path.insert(0, str(venv / "bin"))
    env["PATH"] = os.pathsep.join(path)
    env.update(extra)
    return env


def _source_files() -> list[str]:
    done = checked(
        run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            timeout=RUN_TIMEOUT_S,
            env=user_env(),
            cwd=REPO,
        )
    )
    return [name for name in done.stdout.split("\0") if name]


def copy_source(dest: Path) -> Path:
    """The files of a clean clone (plus uncommitted ones) copied to ``dest``."""
    for name in _source_files():
        source = REPO / name
        if not source.is_file():  # deleted in the work tree, not yet in a commit
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest


def new_venv(path: Path) -> Path:
    """A fresh virtual environment at ``path`` (with pip, as ``python -m venv`` makes it)."""
    base = getattr(sys, "_base_executable", sys.executable)
    checked(run([base, "-m", "venv", str(path)], timeout=INSTALL_TIMEOUT_S, env=user_env()))
    return path


def pip_install(venv: Path, *requirements: str) -> None:
    argv = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements]
    checked(run(argv, timeout=INSTALL_TIMEOUT_S, env=user_env(venv), cwd=venv))


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltWheel:
    """The wheel file, the tree it was built from and what its build printed (``pip wheel --verbose``)."""

    path: Path
    source: Path
    log: str


def build_wheel(source: Path, out: Path) -> BuiltWheel:
    """``pip wheel --no-deps`` of the tree at ``source`` into ``out``."""
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose", "--wheel-dir", str(out), "."]
    done = checked(run(argv, timeout=INSTALL_TIMEOUT_S, cwd=source, env=user_env()))
    [wheel] = out.glob("attested_random-*.whl")
    return BuiltWheel(path=wheel, source=source, log=done.stdout + done.stderr)
