"""cpio "newc" archives: the format of an EIF's ramdisks (initramfs), written reproducibly and read strictly.

Format (the kernel's ``Documentation/driver-api/early-userspace/buffer-format.rst``, the "newc" format of
GNU cpio): each member is a 110-byte ASCII header, magic ``070701`` then thirteen 8-digit hexadecimal fields
(ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check), the
NUL-terminated name padded to a multiple of 4 bytes (counting the header), then the data padded the same way.
The archive ends with a member named ``TRAILER!!!``.

Reproducibility rules of :func:`write_newc` (so the same tree gives the same bytes, hence the same PCRs,
on any machine): members in the order given (the caller sorts them), inode numbers counted from 1, owner
and group 0, modification time 0, ``nlink`` 2 for directories and 1 otherwise, no device numbers,
upper-case hexadecimal as the kernel's ``gen_init_cpio`` writes it.

:func:`read_newc` takes either digit case and the ``070702`` (with checksum) magic, and refuses with
:class:`CpioError` anything it cannot take whole: a short or garbled header, a name that is absolute,
empty, has ``.``/``..`` components or a NUL inside, sizes past the data or past the named bounds, a
missing trailer. A member named ``.`` (some archivers add the root) is skipped.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

from attestation.errors import MalformedError

__all__ = [
    "MAX_ENTRIES",
    "MAX_NAME_BYTES",
    "CpioEntry",
    "CpioError",
    "read_newc",
    "write_newc",
]

MAGIC = b"070701"
MAGIC_CRC = b"070702"
HEADER_BYTES = 110
TRAILER = "TRAILER!!!"
#: Members in one archive (an image's whole root filesystem).
MAX_ENTRIES = 200_000
#: One member's name, with its terminating NUL (PATH_MAX).
MAX_NAME_BYTES = 4096
#: The file types an image may hold; devices, FIFOs and sockets have no place in a built image.
_TYPES = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class CpioError(MalformedError):
    """A cpio archive is truncated, garbled, or breaks one of this module's rules."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CpioEntry:
    """One member: a relative ``path``, its full ``st_mode`` (type and permission bits) and its ``data``.

    ``data`` is a regular file's contents or a symbolic link's target; a directory has none.
    """

    path: str
    mode: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_name(self.path)
        if stat.S_IFMT(self.mode) not in _TYPES or self.mode & ~0o177777:
            raise CpioError(f"{self.path}: mode {self.mode:#o} is not a regular file, directory or symlink")
        if self.is_dir and self.data:
            raise CpioError(f"{self.path}: a directory holds no data")

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


def _check_name(name: str) -> None:
    raw = name.encode("utf-8", "surrogateescape")
    if not name or name.startswith("/") or "\x00" in name:
        raise CpioError(f"member name {name[:80]!r} must be a relative path without NUL")
    if len(raw) + 1 > MAX_NAME_BYTES:
        raise CpioError(f"member name is {len(raw)} bytes, over the {MAX_NAME_BYTES - 1}-byte bound")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise CpioError(f"member name {name[:80]!r} has an empty, '.' or '..' component")


def _pad(size: int) -> bytes:
    return b"\x00" * (-size % 4)


def _header(ino: int, mode: int, nlink: int, size: int, namesize: int) -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0)
    return MAGIC + b"".join(b"%08X" % value for value in fields)


def write_newc(entries: Iterable[CpioEntry]) -> bytes:
    """The newc archive of ``entries``, in the given order, with the trailer (see the module rules)."""
    out = bytearray()
    for count, entry in enumerate(entries, start=1):
        if count > MAX_ENTRIES:
            raise CpioError(f"more than {MAX_ENTRIES} members")
        name = entry.path.encode("utf-8", "surrogateescape") + b"\x00"
        nlink = 2 if entry.is_dir else 1
        out += _header(count, entry.mode, nlink, len(entry.data), len(name))
        out += name + _pad(HEADER_BYTES + len(name))
        out += entry.data + _pad(len(entry.data))
    trailer = TRAILER.encode() + b"\x00"
    out += _header(0, 0, 1, 0, len(trailer)) + trailer + _pad(HEADER_BYTES + len(trailer))
    return bytes(out)


def _field(header: bytes, index: int, offset: int) -> int:
    digits = header[6 + 8 * index : 14 + 8 * index]
    if not _HEX_DIGITS.issuperset(digits):
        raise CpioError(f"member at byte {offset}: header field {index} is not hexadecimal")
    return int(digits, 16)


def read_newc(data: bytes) -> list[CpioEntry]:
    """The members of the newc archive ``data``, in archive order (the trailer and ``.`` left out)."""
    view = memoryview(data)
    entries: list[CpioEntry] = []
    offset = 0
    while True:
        if len(entries) > MAX_ENTRIES:
            raise CpioError(f"more than {MAX_ENTRIES} members")
        header = bytes(view[offset : offset + HEADER_BYTES])
        if len(header) < HEADER_BYTES:
            raise CpioError(f"truncated: no trailer (archive ends at byte {len(data)})")
        if header[:6] not in (MAGIC, MAGIC_CRC):
            raise CpioError(f"member at byte {offset}: bad magic {header[:6]!r} (not a newc archive)")
        mode = _field(header, 1, offset)
        size = _field(header, 6, offset)
        namesize = _field(header, 11, offset)
        if not 1 < namesize <= MAX_NAME_BYTES:
            raise CpioError(f"member at byte {offset}: name size {namesize} out of 2..{MAX_NAME_BYTES}")
        name_start = offset + HEADER_BYTES
        data_start = name_start + namesize + (-(HEADER_BYTES + namesize) % 4)
        data_end = data_start + size
        if data_end > len(data):
            raise CpioError(f"member at byte {offset}: truncated (its data runs past the archive's end)")
        raw_name = bytes(view[name_start : name_start + namesize])
        if raw_name[-1:] != b"\x00":
            raise CpioError(f"member at byte {offset}: name is not NUL-terminated")
        name = raw_name[:-1].decode("utf-8", "surrogateescape")
        offset = data_end + (-size % 4)
        if name == TRAILER:
            return entries
        if name == "." and stat.S_ISDIR(mode):
            continue
        if name.startswith("./"):
            name = name[2:]
        entries.append(CpioEntry(path=name, mode=mode, data=bytes(view[data_start:data_end])))
