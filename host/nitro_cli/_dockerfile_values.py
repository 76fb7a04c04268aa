"""Values inside Dockerfile instructions, checked one at a time: ports, signals, durations, modes, archives,
and the text that may go into the image config or nitro-cli's ``cmd``/``env`` files.

Sources: docs.docker.com/reference/dockerfile (EXPOSE, STOPSIGNAL, HEALTHCHECK, ADD "auto-extraction",
COPY ``--chmod``); Go's ``time.ParseDuration`` for HEALTHCHECK's durations; the enclave's init
(aws-nitro-enclaves-sdk-bootstrap ``init.c`` ``read_config``) reads ``cmd`` and ``env`` one ``getline``
per item, so an item holding a newline would be split in two, and a NUL would cut it short.
Every function raises :class:`StepError` (one line) on a bad value.
"""

from __future__ import annotations

import bz2
import lzma
import re
import signal
import zlib
from collections.abc import Mapping

from host.nitro_cli._dockerfile_parse import StepError, exec_form

__all__ = [
    "MAX_CONFIG_ITEMS",
    "bounded",
    "check_line_safe",
    "check_signal",
    "check_text",
    "healthcheck",
    "is_archive",
    "octal_mode",
    "ports",
]

#: Env variables, labels, exposed ports or volumes in the image config (each).
MAX_CONFIG_ITEMS = 4096
_PORT_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?(?:/([a-zA-Z]+))?")
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_HEALTH_DURATIONS = (
    ("interval", "Interval"),
    ("timeout", "Timeout"),
    ("start-period", "StartPeriod"),
    ("start-interval", "StartInterval"),
)
#: Bytes of a compressed file decompressed to look for a tar header.
_SNIFF_BYTES = 64 * 1024
_TAR_BLOCK = 512
_TAR_MAGIC_OFFSET = 257


def bounded(table: Mapping[str, object], key: str) -> None:
    """Refuse adding ``key`` to a config table already holding :data:`MAX_CONFIG_ITEMS`."""
    if key not in table and len(table) >= MAX_CONFIG_ITEMS:
        raise StepError(f"more than {MAX_CONFIG_ITEMS} of them in the image config")


def check_text(text: str, what: str) -> str:
    """``text`` if it can go into the image's JSON config: valid UTF-8 (no lone surrogate), no NUL."""
    if "\x00" in text or any("\ud800" <= char <= "\udfff" for char in text):
        raise StepError(f"{what} holds a NUL or a lone surrogate character")
    return text


def check_line_safe(text: str, what: str) -> str:
    """``text`` if it can be one line of nitro-cli's ``cmd`` or ``env`` file."""
    if "\n" in check_text(text, what):
        raise StepError(
            f"{what} holds a newline, which nitro-cli's one-per-line cmd and env files cannot carry"
        )
    return text


def ports(spec: str) -> list[str]:
    """``PORT[-PORT][/PROTO]`` as Docker's ``ExposedPorts`` keys (``80/tcp``), a range expanded."""
    match = _PORT_RE.fullmatch(spec)
    proto = (match[3] or "tcp").lower() if match else ""
    if match is None or proto not in ("tcp", "udp", "sctp"):
        raise StepError(f"invalid port {spec[:40]!r} (PORT[-PORT][/tcp|udp|sctp])")
    first, last = int(match[1]), int(match[2] or match[1])
    if not 0 < first <= last <= 65535:
        raise StepError(f"invalid port range {spec[:40]!r}")
    return [f"{port}/{proto}" for port in range(first, last + 1)]


def check_signal(value: str) -> str:
    """A STOPSIGNAL: a number 1-64 or a signal name, with or without ``SIG``."""
    name = value.upper().removeprefix("SIG")
    numeric = value.isascii() and value.isdigit() and 0 < int(value) < 65
    if not numeric and f"SIG{name}" not in signal.Signals.__members__:
        raise StepError(f"invalid signal: {value[:40]}")
    return value


def octal_mode(value: str) -> int:
    """A ``--chmod`` value: octal permission bits (symbolic modes are not supported here)."""
    if not re.fullmatch(r"[0-7]{1,4}", value):
        raise StepError(f"--chmod={value[:20]}: only octal modes (e.g. 755) are supported")
    return int(value, 8)


def healthcheck(args: str, flags: Mapping[str, str | None]) -> dict[str, object]:
    """HEALTHCHECK's config: ``{"Test": ["NONE"]}``, or the command (``CMD`` exec form, ``CMD-SHELL`` shell
    form) with the durations in nanoseconds and the retries, only those given."""
    kind, rest = [*args.split(maxsplit=1), ""][:2]
    if kind.upper() == "NONE":
        if rest or flags:
            raise StepError("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind.upper() != "CMD" or not rest:
        raise StepError("expects NONE or CMD followed by a command")
    words = exec_form(rest)
    test = ["CMD-SHELL", rest] if words is None else ["CMD", *words]
    check: dict[str, object] = {"Test": [check_text(word, "HEALTHCHECK") for word in test]}
    for flag, key in _HEALTH_DURATIONS:
        if flags.get(flag):
            check[key] = _duration_ns(flag, str(flags[flag]))
    if flags.get("retries"):
        retries = str(flags["retries"])
        if not (retries.isascii() and retries.isdigit()) or len(retries) > 9:
            raise StepError(f"--retries={retries[:20]}: not a count")
        check["Retries"] = int(retries)
    return check


def _duration_ns(flag: str, text: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``1.5h``) in nanoseconds."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(text) and (match := _DURATION_RE.match(text, pos)):
        total += float(match[1]) * _NS[match[2]]
        pos = match.end()
    if pos != len(text):
        raise StepError(f"--{flag}={text[:20]}: not a duration (e.g. 30s, 1m30s)")
    return int(total)


def is_archive(data: bytes) -> bool:
    """Whether ADD would unpack ``data``: a tar (ustar magic or a valid v7 header checksum), possibly
    gzip-, bzip2- or xz-compressed; zstd-compressed data counts as one unchecked."""
    head = data[: 2 * _TAR_BLOCK]
    sample = data[:_SNIFF_BYTES]
    try:
        if head.startswith(b"\x1f\x8b"):
            head = zlib.decompressobj(wbits=31).decompress(sample, _TAR_BLOCK)
        elif head.startswith(b"BZh"):
            head = bz2.BZ2Decompressor().decompress(sample, _TAR_BLOCK)
        elif head.startswith(b"\xfd7zXZ\x00"):
            head = lzma.LZMADecompressor().decompress(sample, _TAR_BLOCK)
        elif head.startswith(b"\x28\xb5\x2f\xfd"):
            return True
    except (zlib.error, OSError, EOFError, lzma.LZMAError):
        return False
    if len(head) < _TAR_BLOCK:
        return False
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return True
    stored = head[148:156].strip(b" \x00")
    if not stored or not all(48 <= byte <= 55 for byte in stored):
        return False
    return int(stored, 8) == sum(head[:148]) + 32 * 8 + sum(head[156:_TAR_BLOCK])
