"""Unpacking an application ramdisk safely, and planning how the enclave's app runs (no processes)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from attestation.cpio import CpioEntry, write_newc
from host.nitro_cli._launch import LaunchError, plan, resolve_in_image
from host.nitro_cli._unpack import MAX_CONFIG_BYTES, UnpackError, parse_cmd, parse_env, unpack


def d(path: str, mode: int = 0o755) -> CpioEntry:
    return CpioEntry(path=path, mode=stat.S_IFDIR | mode)


def f(path: str, data: bytes = b"", mode: int = 0o644) -> CpioEntry:
    return CpioEntry(path=path, mode=stat.S_IFREG | mode, data=data)


def link(path: str, target: str) -> CpioEntry:
    return CpioEntry(path=path, mode=stat.S_IFLNK | 0o777, data=target.encode())


CMD = f("cmd", b"python3\nmain.py\n")


def unpacked(tmp_path: Path, *entries: CpioEntry) -> Path:
    dest = tmp_path / "enclave"
    dest.mkdir()
    unpack(write_newc(entries), dest)
    return dest


# -- unpacking


def test_unpack_lays_out_rootfs_and_reads_cmd_and_env(tmp_path: Path) -> None:
    dest = tmp_path / "enclave"
    dest.mkdir()
    app = unpack(
        write_newc(
            [
                d("rootfs"),
                d("rootfs/app"),
                f("rootfs/app/main.py", b"print(1)\n"),
                CMD,
                f("env", b"A=1\nB=x=y\n"),
            ]
        ),
        dest,
    )
    assert app.rootfs == dest / "rootfs"
    assert (dest / "rootfs/app/main.py").read_bytes() == b"print(1)\n"
    assert app.argv == ["python3", "main.py"]
    assert app.env == [("A", "1"), ("B", "x=y")]
    assert not (dest / "cmd").exists()


def test_a_symlink_is_never_followed_while_unpacking(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(UnpackError, match="not a directory"):
        unpacked(
            tmp_path, d("rootfs"), link("rootfs/escape", str(outside)), f("rootfs/escape/evil", b"x"), CMD
        )
    assert list(outside.iterdir()) == []


def test_a_symlink_replaced_by_a_file_is_not_written_through(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    dest = unpacked(tmp_path, d("rootfs"), link("rootfs/a", str(target)), f("rootfs/a", b"new"), CMD)
    assert target.read_bytes() == b"keep"
    assert (dest / "rootfs/a").read_bytes() == b"new"
    assert not (dest / "rootfs/a").is_symlink()


def test_modes_lose_set_id_bits_and_keep_the_owner_able_to_read(tmp_path: Path) -> None:
    dest = unpacked(
        tmp_path, d("rootfs", 0o555), f("rootfs/tool", b"x", 0o4750), f("rootfs/secret", b"y", 0o000), CMD
    )
    assert stat.S_IMODE(os.stat(dest / "rootfs/tool").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(dest / "rootfs/secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(dest / "rootfs").st_mode) == 0o755


def test_missing_parents_are_created(tmp_path: Path) -> None:
    dest = unpacked(tmp_path, f("rootfs/a/b/c.txt", b"deep"), CMD)
    assert (dest / "rootfs/a/b/c.txt").read_bytes() == b"deep"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        pytest.param([f("etc/passwd", b"x"), CMD], "unexpected entry 'etc/passwd'", id="top-level"),
        pytest.param([f("rootfs", b"x"), CMD], "unexpected entry 'rootfs'", id="rootfs-file"),
        pytest.param(
            [d("rootfs"), d("rootfs/a"), f("rootfs/a", b""), CMD], "both a directory", id="dir-file"
        ),
        pytest.param([d("rootfs")], "no `cmd`", id="no-cmd"),
        pytest.param([d("rootfs"), f("cmd", b"\n")], "names no program", id="empty-cmd"),
        pytest.param([d("rootfs"), CMD, f("env", b"NOVALUE\n")], "not KEY=VALUE", id="bad-env"),
        pytest.param([d("rootfs"), f("cmd", b"a\x00b\n")], "NUL", id="nul"),
        pytest.param([d("cmd"), CMD], "unexpected entry 'cmd'", id="cmd-dir"),
    ],
)
def test_bad_ramdisks(tmp_path: Path, entries: list[CpioEntry], message: str) -> None:
    with pytest.raises(UnpackError, match=message):
        unpacked(tmp_path, *entries)


def test_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(UnpackError, match="not a valid cpio archive"):
        unpack(b"garbage", tmp_path)


def test_config_bounds() -> None:
    with pytest.raises(UnpackError, match="bound"):
        parse_cmd(b"x" * (MAX_CONFIG_BYTES + 1))
    assert parse_cmd(b"prog\n\narg\n") == ["prog", "", "arg"]
    assert parse_env(b"") == []


# -- launch plans


def _plan(rootfs: Path, argv: list[str], *, env: list[tuple[str, str]] | None = None) -> list[str]:
    launch = plan(
        rootfs=rootfs,
        argv=argv,
        image_env=env or [],
        home=Path("/home/sim"),
        cid=16,
        nsm_socket=Path("/home/sim/nsm.sock"),
        host_path="/usr/bin:/bin",
    )
    return launch.argv


def test_python_names_are_our_interpreter(tmp_path: Path) -> None:
    rootfs = unpacked(tmp_path, d("rootfs"), d("rootfs/app"), f("rootfs/app/main.py"), CMD) / "rootfs"
    assert _plan(rootfs, ["python3", "main.py"]) == [sys.executable, "main.py"]
    assert _plan(rootfs, ["/usr/local/bin/python3.11", "-m", "x"])[:1] == [sys.executable]
    assert _plan(rootfs, ["python3", "/app/main.py"]) == [sys.executable, str(rootfs / "app/main.py")]
    assert _plan(rootfs, ["python3", "/no/such/file"]) == [sys.executable, "/no/such/file"]


def test_programs_inside_the_image(tmp_path: Path) -> None:
    rootfs = (
        unpacked(
            tmp_path,
            d("rootfs"),
            d("rootfs/opt"),
            f("rootfs/opt/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
            f("rootfs/opt/tool.py", b"#!/usr/bin/env -S python3 -u\nprint(1)\n", 0o755),
            f("rootfs/opt/data", b"not a program", 0o644),
            d("rootfs/usr"),
            d("rootfs/usr/local"),
            d("rootfs/usr/local/bin"),
            link("rootfs/usr/local/bin/run", "/opt/run.sh"),
            CMD,
        )
        / "rootfs"
    )
    assert _plan(rootfs, ["/opt/run.sh", "x"]) == [str(rootfs / "opt/run.sh"), "x"]
    assert _plan(rootfs, ["run"]) == [str(rootfs / "opt/run.sh")]
    assert _plan(rootfs, ["./opt/run.sh"]) == [str(rootfs / "opt/run.sh")]
    assert _plan(rootfs, ["/opt/tool.py"]) == [sys.executable, str(rootfs / "opt/tool.py")]
    assert _plan(rootfs, ["../../../opt/run.sh"]) == [str(rootfs / "opt/run.sh")]
    assert _plan(rootfs, ["sh"]) == ["/usr/bin/sh"] or _plan(rootfs, ["sh"]) == ["/bin/sh"]
    with pytest.raises(LaunchError, match="No such file"):
        _plan(rootfs, ["/opt/missing"])
    with pytest.raises(LaunchError, match="No such file"):
        _plan(rootfs, ["surely-not-a-program-anywhere"])
    with pytest.raises(LaunchError, match="Permission denied"):
        _plan(rootfs, ["/opt/data"])


def test_links_resolve_inside_the_image(tmp_path: Path) -> None:
    rootfs = (
        unpacked(
            tmp_path,
            d("rootfs"),
            d("rootfs/bin"),
            link("rootfs/up", "../../../../bin"),
            link("rootfs/abs", "/../../../../bin"),
            link("rootfs/loop", "/loop"),
            CMD,
        )
        / "rootfs"
    )
    assert resolve_in_image(rootfs, "/up") == rootfs / "bin"
    assert resolve_in_image(rootfs, "/abs") == rootfs / "bin"
    assert resolve_in_image(rootfs, "/../../bin/../up") == rootfs / "bin"
    assert resolve_in_image(rootfs, "/missing/x") is None
    with pytest.raises(LaunchError, match="symbolic links"):
        resolve_in_image(rootfs, "/loop")


def test_environment(tmp_path: Path) -> None:
    rootfs = unpacked(tmp_path, d("rootfs"), d("rootfs/bin"), CMD) / "rootfs"
    launch = plan(
        rootfs=rootfs,
        argv=["python3"],
        image_env=[("PATH", "/bin:/nope"), ("A", "1")],
        home=Path("/home/sim"),
        cid=21,
        nsm_socket=Path("/home/sim/nsm.sock"),
        host_path="/usr/bin",
    )
    assert launch.env == {
        "PATH": f"{rootfs / 'bin'}:{os.path.dirname(sys.executable)}:/usr/bin",
        "A": "1",
        "NITRO_SIM_HOME": "/home/sim",
        "NITRO_SIM_CID": "21",
        "NITRO_SIM_NSM": "/home/sim/nsm.sock",
    }
    assert launch.cwd == str(rootfs)
