"""``nitro-cli build-enclave --docker-dir DIR`` without a Docker engine: the Dockerfile read and carried out
as far as no engine is needed, giving the image's files, config and ``docker inspect`` description.

Where the pieces are: syntax in :mod:`._dockerfile_parse`, ``$VAR`` substitution in :mod:`._dockerfile_shell`,
``.dockerignore`` in :mod:`._dockerignore`, safe reading of the context in :mod:`._build_context`, what each
instruction does (and what is refused) in :mod:`._dockerfile_steps`, the root filesystem in
:mod:`._image_tree`.

Rules of this module:

- The Dockerfile is ``DIR/Dockerfile.enclave`` if it exists, else ``DIR/Dockerfile`` (or the name given).
  The first is this simulation's: the real nitro-cli always asks Docker for ``DIR/Dockerfile``
  (``build_image``: ``.dockerfile("Dockerfile")``). Its ignore file is ``DIR/<name>.dockerignore`` if it
  exists, else ``DIR/.dockerignore`` (buildkit's rule). Both are read through the same no-escape reader
  as the context.
- What nitro-cli puts in the enclave (aws-nitro-enclaves-cli ``enclave_build/src/docker.rs``
  ``extract_image``, ``write_config``): the ``cmd`` file is the image's CMD if it has one, else its
  ENTRYPOINT (never the two joined: the enclave's init runs exactly this argv), else nitro-cli fails with
  ``UnsupportedEntryPoint``; the ``env`` file is the image's Env. Both hold one item per line, each ending
  in ``\\n``. The init (aws-nitro-enclaves-sdk-bootstrap ``init.c``) runs it from ``/`` of the rootfs: it
  does not read WORKDIR or USER, which are kept in the description only.
- Reproducibility: the same Dockerfile and the same tree give the same entries and the same ``Id`` on any
  machine: file modes are normalised (0o755 when any execute bit is set, else 0o644, or ``--chmod``; 0o755
  for directories), owners and times are dropped, nothing of the host (no absolute path, no clock) goes in.
  ``Created`` is the Unix epoch. ``Id`` is ``sha256:`` and the SHA-256 of the canonical JSON of the config
  with the digest of every entry (path, mode, data), so it moves exactly when the image does.
- ``RepoTags`` is the ``--docker-uri``, with ``:latest`` added when it has no ``:``, as nitro-cli's
  ``DockerUtil::new`` tags the image it builds.
"""

from __future__ import annotations

import hashlib
import json
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestation.cpio import CpioEntry
from host.nitro_cli._build_context import BuildContext, NotFoundError
from host.nitro_cli._dockerfile_parse import (
    MAX_DOCKERFILE_BYTES,
    DockerfileError,
    StepError,
    parse_dockerfile,
)
from host.nitro_cli._dockerfile_steps import Builder
from host.nitro_cli._dockerignore import MAX_IGNORE_BYTES, IgnoreRules, parse_dockerignore

__all__ = ["CREATED", "DOCKERFILE_NAMES", "DockerfileError", "ImagePlan", "plan_image"]

#: The Dockerfile names tried in ``--docker-dir``, in order.
DOCKERFILE_NAMES = ("Dockerfile.enclave", "Dockerfile")
#: ``Created`` of every image: no clock goes into the description.
CREATED = "1970-01-01T00:00:00Z"
ARCHITECTURE = "amd64"
OS = "linux"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePlan:
    """The image a Dockerfile describes: its root filesystem (``entries``, paths without the ``rootfs/``
    prefix, sorted) and its config. ``cmd``/``entrypoint`` are None when not set; ``workdir`` and ``user``
    are ``""`` when not set, as in Docker's config; ``not_executed`` holds the RUN lines, ``(line, text)``."""

    base: str
    dockerfile: str
    docker_uri: str = ""
    stage: str | None = None
    entries: tuple[CpioEntry, ...]
    env: tuple[str, ...]
    cmd: tuple[str, ...] | None
    entrypoint: tuple[str, ...] | None
    workdir: str = ""
    user: str = ""
    author: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    shell: tuple[str, ...] | None = None
    stop_signal: str | None = None
    healthcheck: Mapping[str, object] | None = field(default=None, hash=False)
    not_executed: tuple[tuple[int, str], ...] = ()

    def argv(self) -> tuple[str, ...]:
        """What nitro-cli writes to the ``cmd`` file: the CMD, else the ENTRYPOINT (see the module rules)."""
        if self.cmd is not None:
            return self.cmd
        if self.entrypoint is not None:
            return self.entrypoint
        raise DockerfileError(
            f"{self.dockerfile}: no CMD or ENTRYPOINT (the base image's are unknown without a Docker "
            "engine), and nitro-cli needs one to start the enclave (UnsupportedEntryPoint)"
        )

    def cmd_file(self) -> bytes:
        """The ``cmd`` file: each argument and ``\\n``."""
        return b"".join(item.encode() + b"\n" for item in self.argv())

    def env_file(self) -> bytes:
        """The ``env`` file: each ``KEY=VALUE`` and ``\\n``."""
        return b"".join(item.encode() + b"\n" for item in self.env)

    def config(self) -> dict[str, Any]:
        """The image config as ``docker inspect`` shows it (``Config``); optional keys only when set."""
        config: dict[str, Any] = {
            "Env": list(self.env),
            "Cmd": None if self.cmd is None else list(self.cmd),
            "Entrypoint": None if self.entrypoint is None else list(self.entrypoint),
            "WorkingDir": self.workdir,
            "User": self.user,
            "Labels": dict(self.labels),
            "ExposedPorts": {port: {} for port in self.exposed_ports},
        }
        if self.volumes:
            config["Volumes"] = {path: {} for path in self.volumes}
        if self.shell is not None:
            config["Shell"] = list(self.shell)
        if self.stop_signal is not None:
            config["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            config["Healthcheck"] = dict(self.healthcheck)
        return config

    def content_digest(self) -> str:
        """SHA-256 (hex) over every entry's path, mode and data, in order, each length-prefixed."""
        digest = hashlib.sha256()
        for entry in self.entries:
            path = entry.path.encode("utf-8", "surrogateescape")
            digest.update(
                struct.pack(">I", len(path)) + path + struct.pack(">IQ", entry.mode, len(entry.data))
            )
            digest.update(entry.data)
        return digest.hexdigest()

    def inspect(self, docker_uri: str | None = None) -> dict[str, Any]:
        """A deterministic ``docker inspect``-shaped description (nitro-cli's EIF metadata ``DockerInfo``)."""
        uri = self.docker_uri if docker_uri is None else docker_uri
        described = {"Architecture": ARCHITECTURE, "Os": OS, "Author": self.author, "Config": self.config()}
        canonical = json.dumps(
            {**described, "Content": self.content_digest()}, sort_keys=True, separators=(",", ":")
        )
        return {
            "Id": "sha256:" + hashlib.sha256(canonical.encode()).hexdigest(),
            "RepoTags": [uri if ":" in uri else f"{uri}:latest"] if uri else [],
            "Created": CREATED,
            **described,
        }

    def file_bytes(self) -> int:
        """Bytes of regular-file data in the image."""
        return sum(len(e.data) for e in self.entries if stat.S_ISREG(e.mode))


def plan_image(
    context_dir: Path,
    dockerfile_name: str | None = None,
    *,
    docker_uri: str = "",
    build_args: Mapping[str, str] | None = None,
) -> ImagePlan:
    """Read the Dockerfile in ``context_dir`` and carry it out; raise one-line :class:`DockerfileError`."""
    try:
        context = BuildContext(Path(context_dir), IgnoreRules())
    except StepError as exc:
        raise DockerfileError(str(exc)) from None
    with context:
        name = dockerfile_name or _default_name(context, context_dir)
        data = _read(context, name, MAX_DOCKERFILE_BYTES)
        if data is None:
            raise DockerfileError(f"{name}: not found in {context_dir}")
        parsed = parse_dockerfile(data, name=name)
        for ignore_name in (f"{name}.dockerignore", ".dockerignore"):
            ignore = _read(context, ignore_name, MAX_IGNORE_BYTES)
            if ignore is not None:
                context.rules = parse_dockerignore(ignore, name=ignore_name)
                break
        builder = Builder(parsed, context, build_args or {})
        builder.run()
    return ImagePlan(
        base=builder.base or "",
        dockerfile=name,
        docker_uri=docker_uri,
        stage=builder.stage,
        entries=builder.tree.entries(),
        env=tuple(f"{key}={value}" for key, value in builder.env.items()),
        cmd=None if builder.cmd is None else tuple(builder.cmd),
        entrypoint=None if builder.entrypoint is None else tuple(builder.entrypoint),
        workdir=builder.workdir,
        user=builder.user,
        author=builder.author,
        labels=dict(builder.labels),
        exposed_ports=tuple(sorted(builder.ports, key=_port_order)),
        volumes=tuple(sorted(builder.volumes)),
        shell=None if builder.shell is None else tuple(builder.shell),
        stop_signal=builder.stop_signal,
        healthcheck=builder.healthcheck,
        not_executed=tuple(builder.not_executed),
    )


def _default_name(context: BuildContext, context_dir: Path) -> str:
    for name in DOCKERFILE_NAMES:
        try:
            context.resolve(name, honour_ignore=False)
        except StepError:
            continue
        return name
    raise DockerfileError(f"no {' or '.join(DOCKERFILE_NAMES)} in {context_dir}")


def _read(context: BuildContext, name: str, limit: int) -> bytes | None:
    """The control file ``name`` of the context, or None when it is not there."""
    try:
        path = context.resolve(name, honour_ignore=False)
    except NotFoundError:
        return None
    except StepError as exc:
        raise DockerfileError(f"{name}: {exc}") from None
    try:
        return context.read_file(path, limit=limit)
    except StepError as exc:
        raise DockerfileError(f"{name}: {exc}") from None


def _port_order(port: str) -> tuple[int, str]:
    number, _, proto = port.partition("/")
    return int(number), proto
