"""Enclave images and enclaves through our ``nitro-cli``: build, run, terminate (the fixtures, the demo).

Rules:

- Every step is the ``nitro-cli`` command a user would type, run by :func:`nitro_sim.procs.run` in the
  environment given (``NITRO_SIM_HOME`` names the home whose enclaves, vsock sockets and KMS they share);
  a failure is a :class:`~nitro_sim.procs.ProcessError` quoting the command's last lines.
- :func:`build_image`: ``nitro-cli build-enclave --docker-dir DIR --docker-uri URI --output-file EIF``; the
  measurements are the ones it prints.
- :func:`run_enclave`: ``nitro-cli run-enclave``, then the enclave's entry in ``describe-enclaves`` (its
  Measurements as the running enclave reports them). The enclave's supervisor (``ProcessID``: it leads the
  process group of the enclave's NSM device and app) is put under the safety net of
  :mod:`nitro_sim.procs` at once, so an interrupted run stops it too; :func:`terminate_enclave`
  (``nitro-cli terminate-enclave --enclave-id ID``) takes it off again, and stops by record whatever the
  command left running.
- :class:`ImageCache` builds a Dockerfile directory once per content: the key is :func:`context_digest`
  of the directory (every file the build may read: the Dockerfile, its ignore file and every path that
  ignore file keeps, as nitro-cli chooses them, ``host/nitro_cli/_dockerfile.py``) with the URI and the
  settings that change an image (``NITRO_CLI_BLOBS``, ``SOURCE_DATE_EPOCH``). Bound:
  :data:`MAX_DIGEST_ENTRIES` names looked at.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nitro_sim._programs import program
from nitro_sim.procs import ProcessError, Recorded, alive, forget, register, run, start_token, stop_recorded

__all__ = [
    "DEFAULT_CPU_COUNT",
    "DEFAULT_DOCKER_URI",
    "DEFAULT_MEMORY_MIB",
    "MAX_DIGEST_ENTRIES",
    "Enclave",
    "Image",
    "ImageCache",
    "build_image",
    "context_digest",
    "copy_build_context",
    "run_enclave",
    "terminate_enclave",
]

#: ``run-enclave``'s defaults here (those of ``make demo``): within the simulated pool of 7 CPUs, 8 GiB.
DEFAULT_CPU_COUNT = 2
DEFAULT_MEMORY_MIB = 512
DEFAULT_DOCKER_URI = "nitro-sim-test:latest"
#: Names looked at while digesting a Dockerfile directory (nitro-cli's own walk bound).
MAX_DIGEST_ENTRIES = 1_000_000
#: Settings of the environment that change the image built from the same directory.
_IMAGE_SETTINGS = ("NITRO_CLI_BLOBS", "SOURCE_DATE_EPOCH")
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """An enclave image file built by ``nitro-cli build-enclave``, with the measurements it printed."""

    eif: Path
    #: ``HashAlgorithm``, ``PCR0``, ``PCR1``, ``PCR2`` (and ``PCR8`` for a signed image), hex.
    measurements: dict[str, str]
    docker_dir: Path
    docker_uri: str

    @property
    def pcr0(self) -> str:
        return self.measurements["PCR0"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Enclave:
    """A running enclave, as ``run-enclave`` and ``describe-enclaves`` report it."""

    enclave_id: str
    cid: int
    name: str
    #: As ``describe-enclaves`` reports them for the running enclave (zeros in debug mode).
    measurements: dict[str, str]
    eif: Path
    #: The enclave's supervisor (``ProcessID``), leader of the group of its NSM device and app.
    process: Recorded
    #: The enclave's ``describe-enclaves`` entry, every key as nitro-cli prints it.
    info: dict[str, Any] = field(repr=False)

    @property
    def pcr0(self) -> str:
        return self.measurements["PCR0"]


def _json(done_stdout: str, command: str) -> Any:
    try:
        return json.loads(done_stdout)
    except ValueError:
        raise ProcessError(f"{command} printed no JSON: {done_stdout.strip()[:200]!r}") from None


def build_image(
    docker_dir: Path, output: Path, *, env: Mapping[str, str], docker_uri: str = DEFAULT_DOCKER_URI
) -> Image:
    """``nitro-cli build-enclave`` of ``docker_dir`` into ``output``."""
    argv = [*program("nitro-cli"), "build-enclave", "--docker-dir", str(docker_dir)]
    argv += ["--docker-uri", docker_uri, "--output-file", str(output)]
    done = run(argv, name="nitro-cli build-enclave", env=env)
    printed = _json(done.stdout, "nitro-cli build-enclave")
    measurements = printed.get("Measurements") if isinstance(printed, dict) else None
    if not isinstance(measurements, dict) or "PCR0" not in measurements:
        raise ProcessError(f"nitro-cli build-enclave printed no Measurements: {done.stdout.strip()[:200]!r}")
    return Image(eif=output, measurements=measurements, docker_dir=docker_dir, docker_uri=docker_uri)


def run_enclave(
    eif: Path,
    *,
    env: Mapping[str, str],
    cpu_count: int = DEFAULT_CPU_COUNT,
    memory_mib: int = DEFAULT_MEMORY_MIB,
    cid: int | None = None,
    debug: bool = False,
    name: str | None = None,
) -> Enclave:
    """``nitro-cli run-enclave`` of ``eif``; the enclave as ``describe-enclaves`` then lists it."""
    argv = [*program("nitro-cli"), "run-enclave", "--eif-path", str(eif)]
    argv += ["--cpu-count", str(cpu_count), "--memory", str(memory_mib)]
    argv += ["--enclave-cid", str(cid)] if cid is not None else []
    argv += ["--enclave-name", name] if name is not None else []
    argv += ["--debug-mode"] if debug else []
    started = _json(run(argv, name="nitro-cli run-enclave", env=env).stdout, "nitro-cli run-enclave")
    try:
        enclave_id, pid = str(started["EnclaveID"]), int(started["ProcessID"])
    except (TypeError, KeyError, ValueError):
        raise ProcessError(
            f"nitro-cli run-enclave printed no EnclaveID/ProcessID: {started!r:.200}"
        ) from None
    token = start_token(pid)
    supervisor = Recorded(pid=pid, token=token if token is not None else -1)
    if token is not None:
        register(supervisor)
    describe = [*program("nitro-cli"), "describe-enclaves"]
    listed = _json(run(describe, name="nitro-cli describe-enclaves", env=env).stdout, "describe-enclaves")
    info = next((e for e in listed if isinstance(e, dict) and e.get("EnclaveID") == enclave_id), None)
    enclave = Enclave(
        enclave_id=enclave_id,
        cid=int(started.get("EnclaveCID", -1)),
        name=str(started.get("EnclaveName", "")),
        measurements=dict(info.get("Measurements", {})) if info is not None else {},
        eif=eif,
        process=supervisor,
        info=info or {},
    )
    if info is None:
        terminate_enclave(enclave, env=env)
        raise ProcessError(f"enclave {enclave_id} is not running right after run-enclave (its app exited?)")
    return enclave


def terminate_enclave(enclave: Enclave, *, env: Mapping[str, str]) -> None:
    """``nitro-cli terminate-enclave --enclave-id ID`` (quiet if it is gone), then stop what is left."""
    argv = [*program("nitro-cli"), "terminate-enclave", "--enclave-id", enclave.enclave_id]
    try:
        run(argv, name="nitro-cli terminate-enclave", env=env, check=False)
    finally:
        if alive(enclave.process):
            stop_recorded([enclave.process])
        forget(enclave.process.pid)


def context_digest(docker_dir: Path, *, docker_uri: str = "", env: Mapping[str, str] | None = None) -> str:
    """SHA-256 over what ``build-enclave`` of ``docker_dir`` may read, and what else changes the image.

    Each kept path (relative, sorted) with its kind: a file's permission bits and content, a link's
    target, a directory's name. ValueError (one line) over :data:`MAX_DIGEST_ENTRIES` names.
    """
    source = os.environ if env is None else env
    digest = hashlib.sha256()
    digest.update(json.dumps([docker_uri, [source.get(k) for k in _IMAGE_SETTINGS]]).encode() + b"\0")
    for path, entry in _kept_entries(docker_dir):
        info = entry.stat(follow_symlinks=False)
        digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
        if stat.S_ISREG(info.st_mode):
            digest.update(b"f%o\0" % stat.S_IMODE(info.st_mode))
            with open(entry.path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            digest.update(b"\0%d\0" % info.st_size)
        elif stat.S_ISLNK(info.st_mode):
            digest.update(b"l" + os.fsencode(os.readlink(entry.path)) + b"\0")
        elif stat.S_ISDIR(info.st_mode):
            digest.update(b"d\0")
        else:
            digest.update(b"o\0")  # a FIFO, socket or device: the build refuses it if it copies it
    return digest.hexdigest()


def _kept_entries(docker_dir: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every path ``build-enclave`` of ``docker_dir`` may read (relative, each directory before what it
    holds), by the directory's ignore rules; ValueError (one line) over :data:`MAX_DIGEST_ENTRIES` names."""
    excluded, enter_excluded = _ignore_rules(docker_dir)
    seen = 0
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(docker_dir / relative if relative else docker_dir) as entries:
            names = sorted(entries, key=lambda e: e.name)
        for entry in names:
            seen += 1
            if seen > MAX_DIGEST_ENTRIES:
                raise ValueError(f"{docker_dir}: over {MAX_DIGEST_ENTRIES} names to read")
            path = f"{relative}/{entry.name}" if relative else entry.name
            left_out = excluded(path)
            if entry.is_dir(follow_symlinks=False) and (not left_out or enter_excluded):
                pending.append(path)  # a left-out directory may still hold a ``!`` exception
            if not left_out:
                yield path, entry


def copy_build_context(docker_dir: Path, dest: Path) -> Path:
    """A copy of what ``build-enclave`` of ``docker_dir`` may read, at ``dest`` (made): the Dockerfile, its
    ignore file and every path the ignore rules keep, links as links. For a test or a demo that builds a
    changed image; the copy builds the same image as the original."""
    dest.mkdir(parents=True, exist_ok=True)
    for path, entry in _kept_entries(docker_dir):
        target = dest / path
        if entry.is_dir(follow_symlinks=False):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.is_symlink():
            target.symlink_to(os.readlink(entry.path))
        elif entry.is_file(follow_symlinks=False):
            shutil.copy2(entry.path, target)
    return dest


def _ignore_rules(docker_dir: Path) -> tuple[Callable[[str], bool], bool]:
    """What the directory's ignore file leaves out (the Dockerfile and the ignore file never are), and
    whether a left-out directory may hold something kept (a ``!`` exception)."""
    from host.nitro_cli._dockerfile import DOCKERFILE_NAMES  # noqa: PLC0415 - only when digesting
    from host.nitro_cli._dockerignore import IgnoreRules, parse_dockerignore  # noqa: PLC0415

    dockerfile = next((n for n in DOCKERFILE_NAMES if (docker_dir / n).is_file()), DOCKERFILE_NAMES[-1])
    rules, keep = IgnoreRules(), {dockerfile}
    for name in (f"{dockerfile}.dockerignore", ".dockerignore"):
        try:
            rules = parse_dockerignore((docker_dir / name).read_bytes(), name=name)
        except FileNotFoundError:
            continue
        except (OSError, ValueError):  # unreadable or invalid: the build says so; digest everything
            pass
        keep.add(name)
        break
    return (lambda path: path not in keep and rules.ignored(path)), rules.has_exceptions


class ImageCache:
    """Builds each Dockerfile directory once per content (:func:`context_digest`), into ``directory``.

    :meth:`build` raises ValueError (one line) for a directory it cannot digest, ProcessError for a build
    that fails; an image of the same content built before is returned as it was (the same object).
    """

    def __init__(self, directory: Path, *, env: Mapping[str, str]) -> None:
        self.directory = directory
        self.env = dict(env)
        self._images: dict[str, Image] = {}
        #: How many times ``nitro-cli build-enclave`` ran (a test may check that a build was cached).
        self.builds = 0

    def build(self, docker_dir: Path, *, docker_uri: str = DEFAULT_DOCKER_URI) -> Image:
        docker_dir = Path(docker_dir).absolute()
        if not docker_dir.is_dir():
            raise ValueError(f"{docker_dir}: not a directory (name the directory of a Dockerfile)")
        try:
            key = context_digest(docker_dir, docker_uri=docker_uri, env=self.env)
        except OSError as error:
            raise ValueError(f"{docker_dir}: cannot read it: {error.strerror or error}") from None
        image = self._images.get(key)
        if image is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            output = self.directory / f"{key[:32]}.eif"
            image = build_image(docker_dir, output, env=self.env, docker_uri=docker_uri)
            self.builds += 1
            self._images[key] = image
        return image
