"""After the load: every call classified, every record reconciled, everything scanned for secrets.

Run with kms-sim stopped (its database and audit log at rest) and every client gone (their logs whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_pem_private_key

from stress.faults import GRACE_S, classify
from stress.leaks import Needles
from stress.ledger import dropped_by_kms_sim, read_audit, read_key_stores
from stress.load import Client
from stress.operator import Operator
from stress.outcome import Outcome
from stress.stack import Stack

__all__ = ["BOTOCORE_TRANSPORT", "reconcile", "scan", "tally"]

#: botocore's transport errors: what the operator's creates surface as while kms-sim is down (after
#: boto3's own retries).
BOTOCORE_TRANSPORT = frozenset(
    {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError"}
)
_NS = 1_000_000_000
#: The PEM marker of a private key in the simulated PKI's files.
_PEM_KEY = b"-----BEGIN PRIVATE KEY-----"


def tally(out: Outcome, clients: Sequence[Client], operator: Operator, messages: list[str]) -> None:
    """Count the calls; classify each failure against the fault windows; the operator's too."""
    for client in clients:
        answered = client.answered()
        out.calls += len(client.outcomes) + client.abandoned
        out.answered += len(answered)
        out.retried += sum(1 for o in answered if o["retries"])
        out.abandoned += client.abandoned
        for failure in client.failed():
            messages.append(str(failure.get("msg")))
            window = classify(client.index, failure, out.windows)
            if window is None:
                out.unexpected.append(
                    {"client": client.index, **{k: failure.get(k) for k in ("err", "code", "msg")}}
                )
            else:
                key = f"{failure['err']} ({window})"
                out.expected[key] = out.expected.get(key, 0) + 1
        out.clients.append(
            {
                "client": client.index,
                "answered": len(answered),
                "failed": len(client.failed()),
                "abandoned": client.abandoned,
                "incarnations": client.incarnations,
            }
        )
    for (
        fault
    ) in out.windows:  # crashes: how long until a call of a client it hit (all, or the named) is answered
        if not fault.name.endswith("crash"):
            continue
        hit = [c for c in clients if fault.clients is None or c.index in fault.clients]
        later = [int(o["t1"]) for c in hit for o in c.answered() if int(o["t0"]) >= fault.start_ns]
        out.recovery_s[fault.name] = round((min(later) - fault.start_ns) / _NS, 2) if later else None
    kms_down = [w for w in out.windows if w.name.startswith("kms-sim")]
    unexpected = [
        f
        for f in operator.failures
        if f["err"] not in BOTOCORE_TRANSPORT
        or not any(w.start_ns <= f["t1"] and f["t0"] <= w.end_ns + int(GRACE_S * _NS) for w in kms_down)
    ]
    out.operator = {
        "acknowledged": len(operator.acknowledged),
        "answer_lost": len(operator.unacknowledged),
        "failed": len(operator.failures),
        "unexpected": len(unexpected),
    }
    out.unexpected += [
        {"client": "operator", "err": f["err"], "code": f["code"], "msg": ""} for f in unexpected
    ]
    if len(operator.acknowledged) < operator.count:
        out.errors.append(f"only {len(operator.acknowledged)} of {operator.count} key stores were created")


def reconcile(out: Outcome, stack: Stack, clients: Sequence[Client], operator: Operator) -> None:
    """Acknowledged answers and key stores against the audit log and the database (:mod:`stress.ledger`)."""
    book = read_audit(stack.kms.state.audit)
    log = (stack.logs / "kms-sim.log").read_text(encoding="utf-8", errors="replace")
    dropped, _ = dropped_by_kms_sim(log)
    integrity, rows = read_key_stores(stack.kms.state.keystores)
    answered = [(str(o["id"]), int(o["t1"])) for c in clients for o in c.answered()]
    disk_full = [(w.start_ns, w.end_ns) for w in out.windows if w.name == "disk full"]
    out.ledger.settle(
        book,
        answered=answered,
        disk_full=disk_full,
        dropped_reported=dropped,
        stores=operator.acknowledged,
        store_rows=rows,
        integrity=integrity,
    )
    out.audit_refusals = {
        code: sum(1 for r in book.records.values() if r.get("errorCode") == code)
        for code in ("RequestTimeoutException", "ValidationException")
    }


def _pki_keys(home: Path) -> list[tuple[str, int]]:
    """(file, private scalar) of every EC private key in the simulated PKI's PEM files."""
    keys = []
    for path in sorted((home / "pki").glob("*.pem")):
        data = path.read_bytes()
        start = data.find(_PEM_KEY)
        if start < 0:
            continue
        key = load_pem_private_key(data[start:], password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            keys.append((f"home/{path.relative_to(home)}", key.private_numbers().private_value))
    return keys


def needles(stack: Stack, clients: Sequence[Client], operator: Operator) -> Needles:
    """Every plaintext the clients received and every secret of the run."""
    found = Needles()
    for client in clients:
        for o in client.answered():
            found.add_value(bytes.fromhex(str(o["p"])), "plaintext")
        for der in client.keys:
            key = load_der_private_key(der, password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise TypeError("a client's key is not an RSA key")
            numbers = key.private_numbers()
            found.add_private_key(der, (numbers.d, numbers.p, numbers.q), "client RSA private key")
    secret = stack.kms.credentials.secret_access_key.encode()
    found.add_value(secret, "kms-sim secret access key", home={"home/kms/credentials"})
    for password in operator.passwords:
        found.add_value(password.encode(), "key-store password")
    for where, scalar in _pki_keys(stack.home):
        found.add_value(scalar.to_bytes(48, "big"), "simulated PKI private key", home={where})
    return found


def scan(
    out: Outcome, stack: Stack, search: Needles, texts: Sequence[bytes], messages: Sequence[str]
) -> None:
    """Search the capture, every log, every file under the home, argv and environments, messages."""
    out.needles = len(search)
    out.values = {k: v for k, v in search.values.items() if not k.endswith(" number")}
    places: list[tuple[str, bytes | Path]] = [("proxy capture", stack.capture)]
    places += [(f"logs/{p.name}", p) for p in sorted(stack.logs.glob("*.log"))]
    places += [(f"home/{p.relative_to(stack.home)}", p) for p in sorted(stack.home.rglob("*")) if p.is_file()]
    places.append(("argv and environment", b"\0".join(texts)))
    places.append(("error messages", "\n".join([*messages, *(h.outcome for h in out.hostile)]).encode()))
    for where, source in places:
        data = source if isinstance(source, bytes) else _read(source)
        out.scanned[where] = len(data)
        leaks, allowed = search.scan(data, where)
        out.leaks += leaks
        out.allowed_hits += allowed


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
