"""The blobs an image is built from: kernel, its config, command line, the bootstrap's init and nsm.ko.

nitro-cli reads them from ``$NITRO_CLI_BLOBS`` (default ``/usr/share/nitro_enclaves/blobs/``):
``bzImage`` (or ``Image`` on aarch64), ``bzImage.config``, ``cmdline``, ``init`` and ``nsm.ko`` (src/lib.rs
``build_from_docker``, ``blobs_path``). The simulation ships its own deterministic stand-ins beside this
module (``blobs/x86_64/``), so an image builds the same on every machine; when ``NITRO_CLI_BLOBS`` is set,
the real blobs there are read instead and measured exactly as nitro-cli measures them.

The bootstrap ramdisk holds ``dev/`` (0755), ``init`` and ``nsm.ko`` (both 0755), as nitro-cli's linuxkit
template lays it out (enclave_build ``yaml_generator.rs``). The build metadata's operating system and kernel
version come from the third line of the kernel's config, split on space, ``/`` and ``-`` (words 1 and 3), as
``generate_build_info`` takes them.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from attestation.cpio import CpioEntry, write_newc
from host.nitro_cli.errors import NitroCliError

ENV_BLOBS = "NITRO_CLI_BLOBS"
SIMULATED_BLOBS = Path(__file__).resolve().parent / "blobs" / "x86_64"
KERNEL_NAME = "bzImage"
#: Bounds on the blobs we read (a real bzImage is ~7 MiB, init under 1 MiB, nsm.ko under 100 KiB).
MAX_KERNEL_BYTES = 256 * 1024 * 1024
MAX_SMALL_BLOB_BYTES = 64 * 1024 * 1024
MAX_CMDLINE_FILE_BYTES = 4096
#: What ``generate_build_info`` writes when a word is missing from the config line.
UNKNOWN = "Unknown"
_EXEC = stat.S_IFREG | 0o755


@dataclass(frozen=True, slots=True, kw_only=True)
class Blobs:
    """The build inputs that do not come from the Docker image."""

    directory: Path
    kernel: bytes
    cmdline: str
    init: bytes
    nsm_ko: bytes
    operating_system: str
    kernel_version: str

    @property
    def simulated(self) -> bool:
        return self.directory == SIMULATED_BLOBS

    def bootstrap_ramdisk(self) -> bytes:
        """The first ramdisk: ``dev/``, ``init``, ``nsm.ko``."""
        return write_newc(
            [
                CpioEntry(path="dev", mode=stat.S_IFDIR | 0o755),
                CpioEntry(path="init", mode=_EXEC, data=self.init),
                CpioEntry(path="nsm.ko", mode=_EXEC, data=self.nsm_ko),
            ]
        )


def _read(path: Path, bound: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(bound + 1)
    except OSError as exc:
        raise NitroCliError(
            "E19", [str(path), "Open"], subaction=f"Could not open {what}: {exc.strerror or exc}"
        ) from None
    if len(data) > bound:
        raise NitroCliError("E19", [str(path), "Read"], subaction=f"{what} is over the {bound}-byte bound")
    return data


def _os_and_kernel(config: bytes) -> tuple[str, str]:
    lines = config.decode("utf-8", "replace").splitlines()
    if len(lines) < 3:
        raise NitroCliError(
            "E48", subaction="Could not generate build info: the kernel config has no third line"
        )
    words = re.split(r"[ /-]", lines[2])
    pick = [words[i] if i < len(words) else UNKNOWN for i in (1, 3)]
    return pick[0], pick[1]


def load_blobs(environ: Mapping[str, str] | None = None) -> Blobs:
    """The blobs of ``$NITRO_CLI_BLOBS``, or the simulation's own set; raise NitroCliError naming the file."""
    env = os.environ if environ is None else environ
    directory = Path(env[ENV_BLOBS]) if env.get(ENV_BLOBS) else SIMULATED_BLOBS
    cmdline = _read(directory / "cmdline", MAX_CMDLINE_FILE_BYTES, "kernel command line file")
    operating_system, kernel_version = _os_and_kernel(
        _read(directory / f"{KERNEL_NAME}.config", MAX_SMALL_BLOB_BYTES, "kernel image config file")
    )
    return Blobs(
        directory=directory,
        kernel=_read(directory / KERNEL_NAME, MAX_KERNEL_BYTES, "kernel image"),
        cmdline=cmdline.decode("utf-8", "replace").strip(),
        init=_read(directory / "init", MAX_SMALL_BLOB_BYTES, "init"),
        nsm_ko=_read(directory / "nsm.ko", MAX_SMALL_BLOB_BYTES, "nsm.ko"),
        operating_system=operating_system,
        kernel_version=kernel_version,
    )
