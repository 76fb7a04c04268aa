"""kms-sim on both ends of the uvicorn range that pyproject.toml allows.

kms/transport.py subclasses uvicorn's private ``HttpToolsProtocol`` and reads its internals, and kms/cli.py
runs uvicorn's ``Server`` and ``Multiprocess``, so the range is closed (``uvicorn>=OLDEST,<=NEWEST``) and both
ends are tested on every run. Each end is installed once (``pip install --no-deps --target``, kept in pytest's
cache directory: later runs download nothing) and put first on ``PYTHONPATH`` of a child pytest session that
runs :data:`CHECKS` (the suite's own checks of what the transport and the server are for) against the real
``kms-sim serve`` processes it starts, which inherit the path. The old end runs with the oldest httptools
allowed too; the new end with the httptools installed here (httptools has no upper bound: a compiled wheel
per Python version, and uvicorn its only importer). The two sessions run side by side (most of their time is
spent waiting on sockets and deadlines). The bounds are read from pyproject.toml: moving one moves what is
tested.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from nitro_sim.procs import Process, ProcessGroup
from nitro_sim.procs import run as run_command

#: How long one install, or one child session, may take (a safety net on a loaded machine, not a measure).
INSTALL_TIMEOUT_S = 300.0
SESSION_TIMEOUT_S = 300.0

_SERVE = "tests/kms/test_serve.py::"
_TRANSPORT = "tests/kms/test_transport.py::"
_HOSTILE = "tests/kms/test_hostile.py::"
#: What each end must pass: the suite's checks of uvicorn as kms-sim uses it, against the real process.
CHECKS = (
    # uvicorn's Server and Multiprocess as kms/cli.py runs them: workers sharing the socket, TLS, a Unix
    # socket, SIGTERM, workers leaving with their supervisor
    f"{_SERVE}test_workers_share_the_socket_and_sigterm_is_clean",
    f"{_SERVE}test_workers_exit_when_the_supervisor_is_killed",
    f"{_SERVE}test_tls_with_the_home_ca",
    f"{_SERVE}test_unix_socket_listener",
    f"{_SERVE}test_sigterm_single_worker_exits_zero",
    # answers (100-continue, an error with its Date header, HEAD); rate-limited malformed-request lines
    f"{_TRANSPORT}test_served_responses_through_the_coalescing_protocol",
    f"{_TRANSPORT}test_malformed_requests_are_reported_once_a_period",
    f"{_HOSTILE}test_upgrade_requests_are_answered_without_operator_advice_on_stderr",
    # the connection bound
    f"{_TRANSPORT}test_connections_past_the_bound_are_closed_unread",
    # half-close
    f"{_HOSTILE}test_a_half_closing_client_gets_its_answers",
    f"{_HOSTILE}test_an_error_answer_reaches_a_half_closing_client",
    # pipelining
    f"{_HOSTILE}test_good_requests_before_bad_bytes_are_answered_then_the_connection_closes",
    f"{_HOSTILE}test_many_small_pipelined_requests_are_all_answered",
    # the request deadline
    f"{_HOSTILE}test_a_client_that_never_finishes_its_request_is_disconnected",
    f"{_HOSTILE}test_request_timeout_does_not_cut_a_pipeline_being_answered",
    # the head bound (header and trailer fields)
    f"{_HOSTILE}test_a_head_that_never_ends_is_refused_once_over_the_bound",
    f"{_HOSTILE}test_endless_trailer_fields_are_refused_once_over_the_bound",
    # the audit records of what the transport refuses
    "tests/kms/test_transport_audit.py",
)


def _requirement(root: Path, name: str) -> Requirement:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    found = [Requirement(line) for line in project["dependencies"] if Requirement(line).name == name]
    assert len(found) == 1, f"pyproject.toml should name {name} once among the dependencies"
    return found[0]


def _bounds(requirement: Requirement) -> dict[str, str]:
    """``{operator: version}`` of a requirement's specifiers."""
    return {spec.operator: spec.version for spec in requirement.specifier}


def _uvicorn_ends(root: Path) -> tuple[str, str]:
    bounds = _bounds(_requirement(root, "uvicorn"))
    assert set(bounds) == {">=", "<="}, "uvicorn must be bounded as >=OLDEST,<=NEWEST: both ends are tested"
    return bounds[">="], bounds["<="]


def _oldest_httptools(root: Path) -> str:
    bounds = _bounds(_requirement(root, "httptools"))
    assert set(bounds) == {">="}, "httptools is bounded below only (see pyproject.toml)"
    return bounds[">="]


def _installed(cache: Path, name: str, version: str) -> Path:
    """A directory holding exactly ``name==version`` (installed into the cache the first time)."""
    target = cache / f"{name}-{version}"
    if target.is_dir():
        return target
    partial = cache / f"{name}-{version}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--only-binary=:all:", "--target", str(partial), f"{name}=={version}"]  # fmt: skip
    done = run_command(argv, name=f"pip install {name}", timeout=INSTALL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        pytest.fail(f"pip could not install {name}=={version}: {lines[-1]}", pytrace=False)
    partial.rename(target)
    return target


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A child pytest session running :data:`CHECKS` with ``path`` first on ``PYTHONPATH``."""

    uvicorn: str
    httptools: str
    #: The versions a child interpreter imports with that path (what the session and its servers run on).
    imported: tuple[Version, Version]
    process: Process

    def result(self) -> tuple[int | None, str]:
        """The session's exit status (None: not ended within SESSION_TIMEOUT_S) and its last lines."""
        self.process.wait_exit(SESSION_TIMEOUT_S)
        return self.process.exit_status(), self.process.tail(20)


def _start(
    group: ProcessGroup, root: Path, *, name: str, path: list[Path], uvicorn: str, httptools: str
) -> Session:
    env = {"PYTHONPATH": os.pathsep.join([*map(str, path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    probe = "import httptools, uvicorn; print(uvicorn.__version__, httptools.__version__)"
    versions = run_command(
        [sys.executable, "-c", probe], name="import probe", env=os.environ | env, timeout=SESSION_TIMEOUT_S
    ).stdout.split()
    checks = [str(root / check) for check in CHECKS]  # absolute: whatever this run's directory is
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={root}", *checks]
    return Session(
        uvicorn=uvicorn,
        httptools=httptools,
        imported=(Version(versions[0]), Version(versions[1])),
        process=group.spawn(argv, name=name, env=env),
    )


@pytest.fixture(scope="module")
def sessions(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Session]]:
    """Both ends installed and their child sessions started side by side (stopped at the end if running)."""
    root = pytestconfig.rootpath
    cache = getattr(pytestconfig, "cache", None)  # None when pytest's cache plugin is off: a fresh directory
    where = (
        Path(cache.mkdir("uvicorn-range")) if cache is not None else tmp_path_factory.mktemp("uvicorn-range")
    )
    oldest, newest = _uvicorn_ends(root)
    old_httptools, new_httptools = _oldest_httptools(root), metadata.version("httptools")
    old_path = [_installed(where, "uvicorn", oldest), _installed(where, "httptools", old_httptools)]
    new_path = [_installed(where, "uvicorn", newest)]
    with ProcessGroup(tmp_path_factory.mktemp("uvicorn-range-logs")) as group:
        yield {
            "oldest": _start(
                group, root, name="checks-oldest", path=old_path, uvicorn=oldest, httptools=old_httptools
            ),
            "newest": _start(
                group, root, name="checks-newest", path=new_path, uvicorn=newest, httptools=new_httptools
            ),
        }


def _passed(session: Session) -> None:
    wanted = (Version(session.uvicorn), Version(session.httptools))
    assert session.imported == wanted, f"the child session imports {session.imported}, not {wanted}"
    status, tail = session.result()
    assert status == 0, f"uvicorn {session.uvicorn} with httptools {session.httptools}:\n{tail}"
    assert " failed" not in tail
    assert " skipped" not in tail
    assert " passed" in tail


def test_the_range_is_closed_and_this_environment_is_in_it(pytestconfig: pytest.Config) -> None:
    root = pytestconfig.rootpath
    oldest, newest = _uvicorn_ends(root)
    assert Version(oldest) < Version(newest)
    assert _requirement(root, "uvicorn").specifier.contains(metadata.version("uvicorn"))
    assert Version(_oldest_httptools(root)) <= Version(metadata.version("httptools"))


@pytest.mark.slow
def test_kms_sim_serves_on_the_oldest_uvicorn_and_httptools_allowed(sessions: dict[str, Session]) -> None:
    _passed(sessions["oldest"])


@pytest.mark.slow
def test_kms_sim_serves_on_the_newest_uvicorn_allowed(sessions: dict[str, Session]) -> None:
    _passed(sessions["newest"])
