"""kms.audit.AuditLog on a failing disk: one line when records start to be lost, one with the count when
they no longer are, and a torn record never spoils the next line (a real file; /dev/full fails writes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kms.audit import AuditLog


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_outage_is_said_once_and_its_losses_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    saved = os.dup(log._fd)
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        log.write({"n": 1})
        os.dup2(full, log._fd)  # the disk fills up
        for n in (2, 3, 4):
            log.write({"n": n})
        lost = capsys.readouterr().err
        os.dup2(saved, log._fd)  # and has room again
        log.write({"n": 5})
        back = capsys.readouterr().err
    finally:
        os.close(full)
        os.close(saved)
        log.close()
    assert lost.splitlines() == [
        "kms-sim: cannot write the audit log (No space left on device); records are lost until it can"
    ]
    assert back.splitlines() == ["kms-sim: the audit log is writable again; 3 record(s) were lost"]
    assert _records(path) == [{"n": 1}, {"n": 5}]


def test_a_torn_record_does_not_spoil_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    real_write = os.write

    def half(fd: int, data: bytes) -> int:  # the disk takes half a record, then is full
        return real_write(fd, data[: len(data) // 2])

    try:
        log.write({"n": 1})
        monkeypatch.setattr(os, "write", half)
        log.write({"n": 2, "pad": "x" * 40})
        monkeypatch.setattr(os, "write", real_write)
        log.write({"n": 3})
    finally:
        log.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"n": 1}
    assert json.loads(lines[-1]) == {"n": 3}
    assert len(lines) == 3  # the fragment of record 2 stands alone on its line
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("kms-sim: cannot write the audit log (a partial write")
    assert err[1] == "kms-sim: the audit log is writable again; 1 record(s) were lost"
