"""A run's settings and everything it found: the input of :mod:`stress.report`, with the verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from stress import sampling
from stress.faults import Window
from stress.hostile import HostileResult
from stress.leaks import Finding
from stress.ledger import Ledger

__all__ = ["MAX_CLIENTS", "MAX_REQUESTS", "Outcome", "Settings"]

#: Bounds on a run's size (the machine has 2 cores; each client is a process with its own nsm-sim).
MAX_CLIENTS = 64
MAX_REQUESTS = 100_000
#: Rounds the schedule needs: warm-up, five crashes, a clean one, a warm one, then the steady phase
#: (swap, two with the disk full, at least one after).
MIN_ROUNDS = 12


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    clients: int = 16
    requests: int = 500
    batch: int = 25
    n_bytes: int = 32
    kms_workers: int = 2
    #: kms-sim's --request-timeout (its default is 60 s): how long the idle and dripping clients live.
    request_timeout_s: float = 10.0
    drip_interval_s: float = 1.0
    flood_bytes: int = 100_000_000
    key_stores: int = 8

    def check(self) -> None:
        """ValueError (one line) for settings the schedule cannot run with."""
        if not 2 <= self.clients <= MAX_CLIENTS:
            raise ValueError(f"clients must be 2..{MAX_CLIENTS} (one client's answer is handed to another)")
        if not 1 <= self.batch <= self.requests <= MAX_REQUESTS:
            raise ValueError(f"requests must be 1..{MAX_REQUESTS} and at least the batch")
        if self.requests < MIN_ROUNDS * self.batch:
            raise ValueError(f"requests must be at least {MIN_ROUNDS} batches ({MIN_ROUNDS * self.batch})")
        if not 1 <= self.key_stores <= 10:
            raise ValueError("key stores must be 1..10 (KMS's quota of custom key stores per account)")
        if not 32 <= self.n_bytes <= 1024:
            raise ValueError("bytes must be 32..1024 (the leak scan finds values of 31 bytes and more)")


@dataclass(slots=True)
class Outcome:
    """Everything a run found."""

    settings: Settings
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    restarts: list[str] = field(default_factory=list)
    recovery_s: dict[str, float | None] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    answered: int = 0
    retried: int = 0
    abandoned: int = 0
    expected: dict[str, int] = field(default_factory=dict)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    operator: dict[str, int] = field(default_factory=dict)
    hostile: list[HostileResult] = field(default_factory=list)
    hostile_overlap_calls: int = 0
    swap: dict[str, Any] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    audit_refusals: dict[str, int] = field(default_factory=dict)
    first: dict[str, sampling.Usage] = field(default_factory=dict)
    last: dict[str, sampling.Usage] = field(default_factory=dict)
    leaks: list[Finding] = field(default_factory=list)
    allowed_hits: list[Finding] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    capture: dict[str, int] = field(default_factory=dict)
    needles: int = 0
    values: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def flat(self) -> dict[str, bool]:
        """Per service: sampled at both quiet points, the same process, no growth."""
        return {
            role: role in self.last and self.last[role].pid == u.pid and sampling.flat(u, self.last[role])
            for role, u in self.first.items()
        }

    def missed(self) -> list[str]:
        """The zero-targets missed, one line each (empty: the run passed)."""
        out = list(self.errors)
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected failures")
        if self.ledger.lost:
            out.append(f"{self.ledger.lost} records lost")
        if self.ledger.corrupt:
            out.append("the audit log or the key-store database is corrupt")
        if self.leaks:
            out.append(f"{len(self.leaks)} leaks")
        if not self.first or not all(self.flat().values()):
            out.append("descriptors, threads or RSS grew")
        if len(self.hostile) != 3 or not all(h.ok for h in self.hostile):
            out.append("a hostile client was not handled as its rule says")
        if self.audit_refusals.get("RequestTimeoutException", 0) < 1:
            out.append("the request the deadline cut has no audit record")
        if self.swap.get("decryption_errors") != 1 or not self.swap.get("swapped"):
            out.append("the answer handed to another client did not fail with exactly one DecryptionError")
        if not self.allowed_hits:
            out.append("the leak scan did not find the secret key in its own file (the scan's self-check)")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "seconds": self.seconds,
            "phases_s": self.phases,
            "requests": {
                "calls": self.calls,
                "answered": self.answered,
                "answered_after_sdk_retries": self.retried,
                "abandoned_by_killed_client": self.abandoned,
            },
            "failures": {"expected": self.expected, "unexpected": self.unexpected},
            "restarts": self.restarts,
            "recovery_s": self.recovery_s,
            "operator_key_stores": self.operator,
            "hostile": [asdict(h) for h in self.hostile],
            "calls_while_hostile_clients_were_connected": self.hostile_overlap_calls,
            "cross_decryption": self.swap,
            "records": asdict(self.ledger),
            "audit_refusals": self.audit_refusals,
            "usage_first": {k: v.as_dict() for k, v in self.first.items()},
            "usage_last": {k: v.as_dict() for k, v in self.last.items()},
            "flat": self.flat(),
            "leaks": [asdict(f) for f in self.leaks],
            "scan": {
                "values_by_kind": self.values,
                "needles": self.needles,
                "bytes_scanned": self.scanned,
                "capture": self.capture,
                "found_where_allowed": [asdict(f) for f in self.allowed_hits],
            },
            "missed": self.missed(),
        }
