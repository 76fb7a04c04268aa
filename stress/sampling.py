"""What our processes hold, read from ``/proc`` (proc(5)): descriptors, threads, resident memory, argv.

- ``/proc/<pid>/fd`` (one entry per open descriptor), ``/proc/<pid>/status`` (``Threads:``, ``VmRSS:`` in kB),
  ``/proc/<pid>/task/<tid>/children`` (the direct children, how kms-sim's uvicorn workers are found),
  ``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ`` (NUL-separated; the leak scan reads them).
- A process that ended between listing and reading is skipped (None), never an error.
- :func:`flat` is the verdict on two samples of one process taken at quiet moments (every client's
  connection closed): descriptors and threads may not grow at all; resident memory may grow by at most
  :data:`RSS_SLACK_FRACTION` of the first value or :data:`RSS_SLACK_KIB`, whichever is larger (the
  allocator keeps freed pages; a leak of a few hundred bytes a request over thousands is far past it).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "RSS_SLACK_FRACTION",
    "RSS_SLACK_KIB",
    "Usage",
    "children",
    "cmdline",
    "flat",
    "process_text",
    "usage",
]

#: Growth of resident memory still called flat: 10 % of the first value, or 4 MiB.
RSS_SLACK_FRACTION = 0.10
RSS_SLACK_KIB = 4 * 1024
#: Most bytes read from one ``/proc`` file (status is ~1.5 KB; argv and environment of ours are small).
MAX_PROC_FILE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """One process at one moment."""

    pid: int
    fds: int
    threads: int
    rss_kib: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_PROC_FILE_BYTES)
    except OSError:
        return None


def usage(pid: int) -> Usage | None:
    """Descriptors, threads and RSS of ``pid``; None if it is gone."""
    status = _read(f"/proc/{pid}/status")
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    if status is None:
        return None
    fields: dict[bytes, bytes] = {}
    for line in status.splitlines():
        name, _, value = line.partition(b":")
        fields[name] = value.strip()
    threads = int(fields.get(b"Threads", b"0") or b"0")
    rss = int((fields.get(b"VmRSS", b"0 kB").split() or [b"0"])[0])
    return Usage(pid=pid, fds=fds, threads=threads, rss_kib=rss)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's list), sorted; [] if it is gone."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        text = _read(f"/proc/{pid}/task/{tid}/children")
        if text:
            found.update(int(word) for word in text.split())
    return sorted(found)


def cmdline(pid: int) -> bytes:
    """``pid``'s argv, NUL-separated (b"" if gone)."""
    return _read(f"/proc/{pid}/cmdline") or b""


def process_text(pid: int) -> bytes:
    """``pid``'s argv and environment as they are in ``/proc`` (b"" if gone), for the leak scan."""
    return b"\n".join(part for part in (_read(f"/proc/{pid}/cmdline"), _read(f"/proc/{pid}/environ")) if part)


def flat(first: Usage, last: Usage) -> bool:
    """Whether ``last`` shows no growth over ``first`` (module docstring)."""
    slack = max(int(first.rss_kib * RSS_SLACK_FRACTION), RSS_SLACK_KIB)
    return last.fds <= first.fds and last.threads <= first.threads and last.rss_kib <= first.rss_kib + slack
