"""State files that take effect without a restart: the credentials, policy and faults files.

A :class:`Watched` value is loaded at start and re-read when the file's (inode, size, mtime) changes,
looked at no more than once per ``recheck_s`` (default :data:`RECHECK_S`; ``kms-sim serve
--reload-interval``) of the monotonic clock the caller passes in. With ``recheck_s`` 0 every request
looks, so a change made by an atomic rename is in force for the next request (what a test harness needs
to change a policy deterministically, without waiting).

Rules (no content of a watched file, at any instant, may stop the server or open access by accident):

- At start, a file that does not load is an error (``kms-sim serve`` refuses to start, in one line),
  unless a ``fallback`` is given: a ``--workers`` process starts after the supervisor has checked the
  files, and may read one half-rewritten; it then serves with the fallback (no principals, no
  permissions, no faults: closed) until the file loads.
- Later, a change that does not load (a half-written, truncated, invalid or unreadable file), whatever
  the loader raises, keeps the previous value, and says so once on stderr in one line that never quotes
  the file (a credentials file holds secrets): only a SimulationError's own message, which is written not
  to, or the exception's type. While it does not load, each look re-reads it (a rewrite in place can keep
  the size and the mtime tick the half-written read saw); the first load that succeeds says so once too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from attestation.errors import SimulationError

__all__ = ["MAX_RECHECK_S", "RECHECK_S", "Watched"]

#: How often (seconds) a request may trigger a stat() of a watched file, by default.
RECHECK_S = 1.0
#: Largest ``recheck_s`` (``--reload-interval``): an hour.
MAX_RECHECK_S = 3600.0

T = TypeVar("T")


def _stamp(path: Path) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _reason(error: Exception) -> str:
    """Why a load failed, without the file's content: our own one-line message, else the type's name."""
    if isinstance(error, SimulationError):
        return str(error)
    return f"{type(error).__name__} while loading it"


class Watched(Generic[T]):
    """``loader(path)``'s value, refreshed when the file changes; never raises after construction."""

    def __init__(
        self,
        path: Path,
        loader: Callable[[Path], T],
        *,
        what: str,
        tick: float,
        recheck_s: float = RECHECK_S,
        fallback: T | None = None,
    ) -> None:
        if not 0.0 <= recheck_s <= MAX_RECHECK_S:
            raise ValueError(f"the reload interval must be 0..{MAX_RECHECK_S:g} s, got {recheck_s!r}")
        self._path = path
        self._recheck_s = recheck_s
        self._loader = loader
        self._what = what
        #: Whether the last load failed (then every look re-reads, and a success is announced).
        self._failing = False
        # The stamp is taken before the read: a write that lands after it changes the stamp again.
        self._stamp = _stamp(path)
        self._checked = tick
        if fallback is None:
            self._value = loader(path)  # strict: the caller turns the error into a refusal to start
        else:
            self._value = fallback
            self._load(kept=f"serving with no {what} until {path} loads")

    @property
    def failing(self) -> bool:
        """Whether the file's current content did not load (the value is the previous one)."""
        return self._failing

    def _load(self, *, kept: str) -> None:
        try:
            value = self._loader(self._path)
        # Any exception: a loader's bug on some content must not reach the request (or stop the server).
        except Exception as error:
            if not self._failing:
                print(f"kms-sim: {kept}: {_reason(error)}", file=sys.stderr)
            self._failing = True
            return
        if self._failing:
            print(f"kms-sim: {self._path} loaded; the {self._what} is in force", file=sys.stderr)
        self._failing = False
        self._value = value

    def get(self, tick: float) -> T:
        if tick - self._checked >= self._recheck_s:
            self._checked = tick
            stamp = _stamp(self._path)
            if stamp != self._stamp or self._failing:
                self._stamp = stamp
                self._load(kept=f"keeping the previous {self._what}")
        return self._value
