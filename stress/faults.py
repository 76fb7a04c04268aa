"""Fault windows and the verdict on every failed call: expected (a documented error, where a fault explains
it) or unexpected (anything else).

A window is when a fault was in force: from the moment it struck to the moment the service was back, plus
:data:`GRACE_S` for calls the SDK was still retrying (standard mode: three attempts, back-off up to
1 + 2 s). A failure is *expected* when its error is documented (:data:`DOCUMENTED`), is one the window's
fault explains (:data:`TRANSPORT` for a crashed service on the request path, NSMDeviceError for a crashed
NSM device, DecryptionError for an answer swapped by the host), the failed call overlaps the window, and
the window covers that client (client-specific faults name it). At most ``limit`` failures of a window
are expected (the swap: exactly one DecryptionError). Everything else is *unexpected*, a target missed.

Disk full (:func:`disk_full`): the soft ``RLIMIT_FSIZE`` of each kms-sim worker is lowered to the audit
log's current size with prlimit(2) (allowed on one's own processes, no privilege needed: setrlimit(2)), so
every append fails with EFBIG as on a full disk, without a partial record; raising it back to what it was
ends the fault. Python ignores SIGXFSZ, so the worker sees the error, not the signal.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["DOCUMENTED", "GRACE_S", "TRANSPORT", "Window", "classify", "disk_full"]

#: Time after a window during which failures still count as its (the SDK's retries of calls begun in it).
GRACE_S = 5.0
#: The SDK's transport errors (enclave.errors): what a crashed kms-sim, kms-sim worker or vsock-proxy
#: surfaces as, once the SDK's retries are used up.
TRANSPORT = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ProtocolError"})
#: Every error the SDK documents (enclave.errors, attestation.errors' DecryptionError and NSMError).
DOCUMENTED = TRANSPORT | frozenset(
    {
        "ClientError",
        "ResponseError",
        "CredentialsError",
        "ParamValidationError",
        "DecryptionError",
        "NSMError",
        "NSMDeviceError",
    }
)
_NS = 1_000_000_000


@dataclass(slots=True, kw_only=True)
class Window:
    """One fault: its name, when it held (CLOCK_MONOTONIC ns), whom it hit, what it may cause."""

    name: str
    start_ns: int
    end_ns: int
    errors: frozenset[str]
    clients: frozenset[int] | None = None  # None: every client
    limit: int | None = None
    used: int = 0

    def covers(self, client: int, error: str, t0: int, t1: int) -> bool:
        if error not in self.errors or (self.clients is not None and client not in self.clients):
            return False
        if self.limit is not None and self.used >= self.limit:
            return False
        return t1 >= self.start_ns and t0 <= self.end_ns + int(GRACE_S * _NS)


def documented(error: str, code: str | None) -> bool:
    """Whether the SDK documents ``error`` (a KMS error arrives as the class named by its code)."""
    return error in DOCUMENTED or (code is not None and error == code)


def classify(client: int, outcome: dict[str, object], windows: Iterable[Window]) -> str | None:
    """The window that explains a failed call, or None (unexpected); counts it against the window."""
    error = str(outcome.get("err"))
    code = outcome.get("code")
    if not documented(error, code if isinstance(code, str) else None):
        return None
    t0, t1 = int(str(outcome.get("t0", 0))), int(str(outcome.get("t1", 0)))
    for window in windows:
        if window.covers(client, error, t0, t1):
            window.used += 1
            return window.name
    return None


@contextlib.contextmanager
def disk_full(pids: Iterable[int], size: int) -> Iterator[None]:
    """The audit log's disk is full for ``pids`` (kms-sim's workers) inside the ``with`` block."""
    before: dict[int, tuple[int, int]] = {}
    try:
        for pid in pids:
            soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            before[pid] = (soft, hard)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, hard))
        yield
    finally:
        for pid, limits in before.items():
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)
