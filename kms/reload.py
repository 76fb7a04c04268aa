"""State files that take effect without a restart: the credentials, policy and faults files.

A :class:`Watched` value is loaded at start (errors there stop the server) and re-read when the file's
(inode, size, mtime) changes, looked at no more than once per ``recheck_s`` (default :data:`RECHECK_S`;
``kms-sim serve --reload-interval``) of the monotonic clock the caller passes in. With ``recheck_s`` 0
every request looks, so a change made by an atomic rename is in force for the next request (what a test
harness needs to change a policy deterministically, without waiting). A change that does not load (a
half-written or invalid file) keeps the previous value and says so once on stderr, so a bad edit never
opens or closes access by accident.
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


class Watched(Generic[T]):
    """``loader(path)``'s value, refreshed when the file changes."""

    def __init__(
        self,
        path: Path,
        loader: Callable[[Path], T],
        *,
        what: str,
        tick: float,
        recheck_s: float = RECHECK_S,
    ) -> None:
        if not 0.0 <= recheck_s <= MAX_RECHECK_S:
            raise ValueError(f"the reload interval must be 0..{MAX_RECHECK_S:g} s, got {recheck_s!r}")
        self._path = path
        self._recheck_s = recheck_s
        self._loader = loader
        self._what = what
        self._stamp = _stamp(path)
        self._value = loader(path)
        self._checked = tick

    def get(self, tick: float) -> T:
        if tick - self._checked >= self._recheck_s:
            self._checked = tick
            stamp = _stamp(self._path)
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._value = self._loader(self._path)
                except SimulationError as error:
                    print(f"kms-sim: keeping the previous {self._what}: {error}", file=sys.stderr)
        return self._value
