"""cpio newc: reproducible writing, strict reading (whole, byte-truncated, garbled), and the name rules."""

from __future__ import annotations

import stat

import pytest

from attestation.cpio import HEADER_BYTES, MAX_NAME_BYTES, CpioEntry, CpioError, read_newc, write_newc

DIR = stat.S_IFDIR | 0o755
FILE = stat.S_IFREG | 0o644
EXE = stat.S_IFREG | 0o755
LINK = stat.S_IFLNK | 0o777

ENTRIES = [
    CpioEntry(path="rootfs", mode=DIR),
    CpioEntry(path="rootfs/app", mode=DIR),
    CpioEntry(path="rootfs/app/run.sh", mode=EXE, data=b"#!/bin/sh\necho hi\n"),
    CpioEntry(path="rootfs/app/x", mode=FILE, data=b"x" * 5),
    CpioEntry(path="rootfs/bin", mode=LINK, data=b"usr/bin"),
    CpioEntry(path="cmd", mode=FILE, data=b"/app/run.sh\n"),
]


def test_round_trip_keeps_order_modes_and_data() -> None:
    assert read_newc(write_newc(ENTRIES)) == ENTRIES


def test_layout_is_the_kernel_newc_format() -> None:
    archive = write_newc([CpioEntry(path="a", mode=FILE, data=b"hello")])
    assert archive[:6] == b"070701"
    fields = [int(archive[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
    # ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
    assert fields == [1, FILE, 0, 0, 1, 0, 5, 0, 0, 0, 0, 2, 0]
    name_end = HEADER_BYTES + 2
    assert archive[HEADER_BYTES:name_end] == b"a\x00"
    assert archive[name_end : name_end + 5] == b"hello"  # 112 is 4-aligned: no name padding
    assert len(archive) % 4 == 0
    assert b"TRAILER!!!\x00" in archive[-128:]


def test_same_entries_give_the_same_bytes() -> None:
    assert write_newc(ENTRIES) == write_newc(list(ENTRIES))


def test_empty_archive_is_just_the_trailer() -> None:
    assert read_newc(write_newc([])) == []


def test_lower_case_digits_and_dot_root_are_read() -> None:
    archive = write_newc([CpioEntry(path="a", mode=FILE, data=b"1")])
    lowered = archive[:6] + archive[6:110].lower() + archive[110:]
    assert read_newc(lowered) == [CpioEntry(path="a", mode=FILE, data=b"1")]


@pytest.mark.parametrize("cut", [0, 5, 109, 110, 111, 120, -20, -1])
def test_truncated_archives_are_refused(cut: int) -> None:
    archive = write_newc(ENTRIES)
    with pytest.raises(CpioError):
        read_newc(archive[:cut] if cut >= 0 else archive[: len(archive) + cut - 100])


def test_every_prefix_is_refused_or_whole() -> None:
    archive = write_newc(ENTRIES[:3])
    for end in range(len(archive)):
        try:
            got = read_newc(archive[:end])
        except CpioError:
            continue
        pytest.fail(f"prefix of {end} bytes was read as {got}")


def test_bad_magic_and_garbled_field_are_refused() -> None:
    archive = bytearray(write_newc(ENTRIES))
    with pytest.raises(CpioError, match="bad magic"):
        read_newc(b"PK\x03\x04" + bytes(archive[4:]))
    archive[6 + 8 * 6] = ord("g")
    with pytest.raises(CpioError, match="not hexadecimal"):
        read_newc(bytes(archive))


def _raw_member(name: bytes, mode: int = FILE) -> bytes:
    """One member written by hand, bypassing CpioEntry's checks (what a hostile archive holds)."""
    named = name + b"\x00"
    fields = (1, mode, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(named), 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + named
    return head + b"\x00" * (-len(head) % 4)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a//b", "a/", "", "a/./b", "x\x00y"])
def test_unsafe_names_are_refused_both_ways(name: str) -> None:
    with pytest.raises(CpioError):
        CpioEntry(path=name, mode=FILE)
    with pytest.raises(CpioError):
        read_newc(_raw_member(name.encode()) + write_newc([]))


def test_devices_and_fifos_are_refused() -> None:
    with pytest.raises(CpioError, match="not a regular file"):
        CpioEntry(path="dev/null", mode=stat.S_IFCHR | 0o666)
    archive = write_newc([CpioEntry(path="p", mode=FILE)])
    forged = archive.replace(b"%08X" % FILE, b"%08X" % (stat.S_IFIFO | 0o644), 1)
    with pytest.raises(CpioError, match="not a regular file"):
        read_newc(forged)


def test_name_bound() -> None:
    with pytest.raises(CpioError, match="bound"):
        CpioEntry(path="a" * MAX_NAME_BYTES, mode=FILE)


def test_directory_with_data_is_refused() -> None:
    with pytest.raises(CpioError, match="no data"):
        CpioEntry(path="d", mode=DIR, data=b"x")
