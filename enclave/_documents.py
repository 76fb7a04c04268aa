"""Attestation documents for one client key: fresh per request (prefetched), or reused for a window.

Modes, chosen per client:

- **fresh** (default): every request carries a document the NSM made for it, used once.
- **fresh, prefetched** (opt-in, ``prefetch_attestation=True``): to keep the NSM round trip off the
  critical path of a *series* of calls, once a client has made a call, the document for its next call is
  requested in the background while the current call is in flight; it is used only if at most
  :data:`PREFETCH_MAX_AGE_SECONDS` old when the next call starts (otherwise dropped, and a new one made
  on the spot). A one-shot client never prefetches: its first call goes directly. Measured with the
  simulated NSM: with everything pinned to one core it costs ~5-10% (thread hand-offs, no spare core to
  overlap on); with a spare core it gains up to ~10-25%. Hence off by default.
- **reuse**: one document serves every request for ``reuse_seconds`` (KMS still checks its age).

The background worker is one daemon thread per client, so a process can always exit even if the NSM
device hangs. A document's age is measured from when its NSM call returned (monotonic clock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from enclave._sockets import fork_generation

__all__ = ["PREFETCH_MAX_AGE_SECONDS", "DocumentSource"]

#: A prefetched document older than this when its request starts is dropped, not sent.
PREFETCH_MAX_AGE_SECONDS = 2.0


class _Attester(Protocol):
    def attestation(
        self, *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes: ...


#: A made document and when (monotonic), or the exception the NSM call raised.
_Outcome = tuple[bytes, float] | BaseException


class _Prefetcher:
    """One daemon thread that makes a document when asked; explicit states, one job at a time."""

    def __init__(self, make: Callable[[], tuple[bytes, float]]) -> None:
        self._make = make
        self._cv = threading.Condition()
        self._requested = False
        self._busy = False
        self._outcome: _Outcome | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="nsm-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._requested and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                self._requested, self._busy = False, True
            outcome: _Outcome
            try:
                outcome = self._make()
            except BaseException as exc:  # handed to the caller, who redoes the call and sees the error
                outcome = exc
            with self._cv:
                self._outcome, self._busy = outcome, False
                self._cv.notify_all()

    def request(self) -> None:
        with self._cv:
            if not self._closed and not self._requested and not self._busy and self._outcome is None:
                self._requested = True
                self._cv.notify_all()

    def collect(self) -> _Outcome | None:
        """The prefetched outcome (waiting if it is being made), or None if none was asked for."""
        with self._cv:
            while (self._requested or self._busy) and not self._closed:
                self._cv.wait()
            outcome, self._outcome = self._outcome, None
            return outcome

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._outcome = None
            self._cv.notify_all()


class DocumentSource:
    """Hands out one attestation document per request; calls must be serialized by the caller."""

    def __init__(
        self,
        device: Callable[[], _Attester],
        public_key: bytes,
        *,
        reuse_seconds: float = 0.0,
        prefetch: bool = False,
    ) -> None:
        self._device = device
        self._public_key = public_key
        self._reuse = reuse_seconds
        self._prefetch = prefetch and reuse_seconds == 0
        self._cached: tuple[bytes, float] | None = None
        self._prefetcher: _Prefetcher | None = None
        self._generation = fork_generation()
        self._calls = 0

    def _make(self) -> tuple[bytes, float]:
        document = self._device().attestation(public_key=self._public_key)
        return document, time.monotonic()

    def take(self) -> bytes:
        """The document for the request about to be sent."""
        self._calls += 1
        if self._reuse > 0:
            if self._cached is None or time.monotonic() - self._cached[1] >= self._reuse:
                self._cached = self._make()
            return self._cached[0]
        if self._generation != fork_generation():  # after fork() the worker is gone: start over here
            self._prefetcher, self._generation = None, fork_generation()
        outcome = self._prefetcher.collect() if self._prefetcher is not None else None
        # A failed prefetch is simply redone on the spot, where its error is raised properly.
        if isinstance(outcome, tuple) and time.monotonic() - outcome[1] <= PREFETCH_MAX_AGE_SECONDS:
            return outcome[0]
        return self._make()[0]

    def prefetch_next(self) -> None:
        """From the second call on (fresh mode), start making the next call's document in the background."""
        if not self._prefetch or self._calls < 2:
            return
        if self._prefetcher is None:
            self._prefetcher = _Prefetcher(self._make)
        self._prefetcher.request()

    def close(self) -> None:
        """Drop any prefetched document and stop the background thread."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None
