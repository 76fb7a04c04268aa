"""run-enclave's arguments (``RunEnclavesArgs`` of ``src/common/commands_parser.rs``), from flags or --config.

From flags, values are parsed in the real tool's order (cpu-count, eif-path, enclave-cid, memory, cpu-ids)
and a bad one is E03 naming the flag; ``--attach-console`` implies ``--debug-mode``.

From ``--config FILE`` (a JSON object read as serde reads the struct): ``eif_path`` (string) and
``memory_mib`` (u64) are required; ``enclave_cid`` (u64), ``cpu_ids`` (list of u32), ``cpu_count`` (u32),
``enclave_name`` (string) may be absent or null; ``debug_mode`` and ``attach_console`` are booleans that
default to false. Unknown keys are ignored; a duplicate key, a wrong type, a number out of range or text
that is not JSON is E17; a file that cannot be opened, or is not a regular file, is E19. Then exactly one
of ``cpu_count`` and ``cpu_ids`` must be given (E01 when neither, E02 when both). The CID in a config file
is not checked here (the real parser does not either): the driver refuses a bad one when the enclave
starts (E29).

Either way, an enclave name over :data:`MAX_ENCLAVE_NAME_CHARS` characters is E58 (a bound of ours).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import stat
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

from host.nitro_cli import _resources
from host.nitro_cli.errors import NitroCliError

#: Largest --config file read.
MAX_CONFIG_FILE_BYTES = 1024 * 1024
#: Longest enclave name (nitro-cli has no limit; ours keeps records small): longer is E58.
MAX_ENCLAVE_NAME_CHARS = 256


@dataclass(slots=True, kw_only=True)
class RunArgs:
    eif_path: str
    enclave_cid: int | None
    memory_mib: int
    cpu_ids: list[int] | None
    cpu_count: int | None
    debug_mode: bool
    attach_console: bool
    enclave_name: str | None


def check_name(name: str | None) -> None:
    """E58 for a name over :data:`MAX_ENCLAVE_NAME_CHARS`."""
    if name is not None and len(name) > MAX_ENCLAVE_NAME_CHARS:
        raise NitroCliError(
            "E58", subaction=f"The enclave name is over {MAX_ENCLAVE_NAME_CHARS} characters"
        ).add_subaction("Failed to assign a new enclave name")


def from_flags(ns: argparse.Namespace) -> RunArgs:
    """The arguments of a flag-form ``run-enclave`` (clap has already checked presence and conflicts)."""
    cpu_count = None
    if ns.cpu_count is not None:
        cpu_count = _resources.parse_number_arg("cpu-count", ns.cpu_count, "cpu-count", bits=32)
    cid = None
    if ns.enclave_cid is not None:
        cid = _resources.parse_number_arg("enclave-cid", ns.enclave_cid, "enclave-cid", bits=64)
        if cid == 0:
            print("The enclave CID will be auto-generated as the provided CID is 0", file=sys.stderr)
        _resources.check_cid(cid)
    memory = _resources.parse_memory(ns.memory)
    check_name(ns.enclave_name)
    cpu_ids = None
    if ns.cpu_ids is not None:
        cpu_ids = [_resources.parse_number_arg("cpu-id", c, "cpu-id", bits=32) for c in ns.cpu_ids]
    return RunArgs(
        eif_path=ns.eif_path,
        enclave_cid=cid,
        memory_mib=memory,
        cpu_ids=cpu_ids,
        cpu_count=cpu_count,
        debug_mode=bool(ns.debug_mode or ns.attach_console),
        attach_console=bool(ns.attach_console),
        enclave_name=ns.enclave_name,
    )


def _serde(message: str) -> NitroCliError:
    return NitroCliError("E17", subaction=f"Invalid JSON format for config file: {message}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _serde(f"duplicate field `{key[:100]}`")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _serde(f"{name} is not JSON")


def _unsigned(config: dict[str, Any], key: str, bits: int, *, required: bool = False) -> int | None:
    value = config.get(key)
    if value is None:
        if required:
            raise _serde(f"missing field `{key}`")
        return None
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise _serde(f"invalid value for `{key}`: expected u{bits}")
    return value


def open_regular(path: str) -> BinaryIO:
    """Open a regular file for reading; OSError for anything else (a FIFO must not block us, a device
    must not be read without end)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "Not a regular file", path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def from_config(path: str) -> RunArgs:
    """The arguments in a ``--config`` JSON file (see the module rules)."""
    try:
        with open_regular(path) as handle:
            raw = handle.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        err = NitroCliError("E19", (path, "Open"), subaction=f"Failed to open config file: {reason}")
        raise err from None
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise _serde(f"the file is over {MAX_CONFIG_FILE_BYTES} bytes")
    try:
        config = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise _serde(str(exc)[:200]) from None
    if not isinstance(config, dict):
        raise _serde("expected a JSON object")
    eif_path, name = config.get("eif_path"), config.get("enclave_name")
    if not isinstance(eif_path, str):
        raise _serde("`eif_path` must be a string")
    if name is not None and not isinstance(name, str):
        raise _serde("`enclave_name` must be a string")
    flags = {}
    for key in ("debug_mode", "attach_console"):
        flags[key] = config.get(key, False)
        if not isinstance(flags[key], bool):
            raise _serde(f"`{key}` must be a boolean")
    cpu_ids = config.get("cpu_ids")
    if cpu_ids is not None and (
        not isinstance(cpu_ids, list)
        or any(type(c) is not int or not 0 <= c <= _resources.U32_MAX for c in cpu_ids)
    ):
        raise _serde("`cpu_ids` must be a list of u32")
    memory = _unsigned(config, "memory_mib", 64, required=True)
    assert memory is not None
    args = RunArgs(
        eif_path=eif_path,
        enclave_cid=_unsigned(config, "enclave_cid", 64),
        memory_mib=memory,
        cpu_ids=cpu_ids,
        cpu_count=_unsigned(config, "cpu_count", 32),
        debug_mode=flags["debug_mode"] or flags["attach_console"],
        attach_console=flags["attach_console"],
        enclave_name=name,
    )
    check_name(args.enclave_name)
    if args.cpu_count is None and args.cpu_ids is None:
        raise NitroCliError("E01", subaction="Missing both `cpu-count` and `cpu-ids`")
    if args.cpu_count is not None and args.cpu_ids is not None:
        raise NitroCliError("E02", subaction="`cpu-count` and `cpu-ids` cannot be used together")
    return args
