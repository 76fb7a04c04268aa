"""Nothing lost, nothing corrupt: what the clients were told against what kms-sim kept.

- **Audit log** (``kms/audit.jsonl``): every line must parse as one JSON object (a torn line is corrupt);
  every GenerateRandom a client acknowledged and every CreateCustomKeyStore the operator got an answer to
  must have its record, found by request ID. kms-sim writes a request's record before it answers
  (kms/service.py), so a crash can lose an answer but never a record of one that was answered.
- **Disk full**: while the audit log cannot grow, kms-sim still answers (KMS serves while CloudTrail
  delivery lags) and says on stderr how many records it lost (kms.audit.AuditLog). Records missing for
  requests answered in that window are *dropped*, not *lost*, as long as kms-sim's own count covers them;
  anything else missing is lost.
- **Key stores** (``kms/keystores.db``, SQLite): ``PRAGMA integrity_check`` must say ``ok`` and every
  acknowledged store must be a row. The file is opened read-only, after kms-sim has stopped.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AuditBook", "Ledger", "dropped_by_kms_sim", "read_audit", "read_key_stores"]

#: Most bytes of audit log read (a record is ~1-3 KB: 8,000 requests are ~20 MB).
MAX_AUDIT_BYTES = 512 * 1024 * 1024
#: kms-sim's stderr when the audit log takes records again (kms.audit.AuditLog).
_DROPPED = re.compile(r"the audit log is writable again; (\d+) record\(s\) were lost")
_FAILING = "cannot write the audit log"


@dataclass(slots=True)
class AuditBook:
    """The audit log, read: records by request ID, and the lines that did not parse."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: int = 0
    corrupt: list[int] = field(default_factory=list)  # 1-based line numbers


def read_audit(path: Path) -> AuditBook:
    book = AuditBook()
    with path.open("rb") as handle:
        data = handle.read(MAX_AUDIT_BYTES + 1)
    if len(data) > MAX_AUDIT_BYTES:
        raise ValueError(f"the audit log is over {MAX_AUDIT_BYTES} bytes")
    lines = data.split(b"\n")
    torn = lines.pop() != b""  # after the last newline: nothing, or a record without its newline (torn)
    if torn:
        lines.append(data[data.rfind(b"\n") + 1 :])
    for number, line in enumerate(lines, start=1):
        book.lines += 1
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        whole = not (torn and number == len(lines))
        if whole and isinstance(record, dict) and isinstance(record.get("requestID"), str):
            book.records[record["requestID"]] = record
        else:
            book.corrupt.append(number)
    return book


def dropped_by_kms_sim(log_text: str) -> tuple[int, int]:
    """(records kms-sim said it lost, times it said the log was failing) from its stderr."""
    return sum(int(n) for n in _DROPPED.findall(log_text)), log_text.count(_FAILING)


def read_key_stores(path: Path) -> tuple[str, set[str]]:
    """(integrity_check's answer, the IDs of the key stores) of the database, opened read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
        ids = {str(row[0]) for row in db.execute("SELECT id FROM key_stores")}
    finally:
        db.close()
    return check, ids


@dataclass(slots=True)
class Ledger:
    """The reconciliation's numbers (:meth:`settle`)."""

    acknowledged: int = 0
    recorded: int = 0
    missing_outside: int = 0
    missing_in_disk_full: int = 0
    dropped_reported: int = 0
    lost: int = 0
    audit_lines: int = 0
    audit_corrupt: int = 0
    key_stores_acknowledged: int = 0
    key_stores_found: int = 0
    key_stores_missing: int = 0
    key_store_records_missing: int = 0
    key_store_integrity: str = ""
    notes: list[str] = field(default_factory=list)

    def settle(
        self,
        book: AuditBook,
        *,
        answered: Sequence[tuple[str, int]],
        disk_full: Iterable[tuple[int, int]],
        dropped_reported: int,
        stores: Sequence[tuple[str, str]],
        store_rows: set[str],
        integrity: str,
    ) -> None:
        """``answered``: (request ID, ns it was answered) of every acknowledged GenerateRandom;
        ``disk_full``: the windows (ns); ``stores``: (store ID, request ID) of every acknowledged create."""
        windows = list(disk_full)
        self.acknowledged = len(answered)
        self.audit_lines = book.lines
        self.audit_corrupt = len(book.corrupt)
        for request_id, at in answered:
            record = book.records.get(request_id)
            if (
                record is not None
                and record.get("eventName") == "GenerateRandom"
                and "errorCode" not in record
            ):
                self.recorded += 1
            elif any(start <= at <= end for start, end in windows):
                self.missing_in_disk_full += 1
            else:
                self.missing_outside += 1
        self.dropped_reported = dropped_reported
        unexplained = max(0, self.missing_in_disk_full - dropped_reported)
        self.key_stores_acknowledged = len(stores)
        self.key_stores_found = sum(1 for store_id, _ in stores if store_id in store_rows)
        self.key_stores_missing = len(stores) - self.key_stores_found
        self.key_store_records_missing = sum(
            1
            for _, request_id in stores
            if book.records.get(request_id, {}).get("eventName") != "CreateCustomKeyStore"
        )
        self.key_store_integrity = integrity
        self.lost = (
            self.missing_outside + unexplained + self.key_stores_missing + self.key_store_records_missing
        )
        if book.corrupt:
            self.notes.append(f"audit lines that do not parse: {book.corrupt[:10]}")

    @property
    def corrupt(self) -> bool:
        return self.audit_corrupt > 0 or self.key_store_integrity != "ok"
