"""Scenario 3's second half: where an attested round trip's time goes beyond the four public-key operations.

One profiled run of the sequential stack (everything pinned to CPU 0): the SDK client process runs under
cProfile for one round, and ``kms-sim`` runs its whole life under ``python -m cProfile``. Each function's
own time (tottime) goes to a category; C functions (socket calls, cryptography's Rust methods, cbor2) are
named by what they are when that is clear, and otherwise charged to the category of whoever called them.
Figures are CPU microseconds per request (profiles taken with ``time.thread_time``).
"""

from __future__ import annotations

import pstats
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

#: Categories of C functions, by the name cProfile gives them (first match wins).
BUILTIN_RULES: tuple[tuple[str, str], ...] = (
    (r"create_x509_certificate", "NSM leaf certificate (x509 sign)"),
    (r"generate_private_key", "key generation"),
    (r"ecprivatekey.*sign|'sign' of .*\bec\b", "ECDSA sign"),
    (r"ecpublickey.*verify|'verify' of .*\bec\b", "ECDSA verify"),
    (r"rsa.*(decrypt|encrypt)|(decrypt|encrypt).*rsa", "RSA-OAEP"),
    (r"x509|verifier|verify_directly_issued_by|load_der_x509", "chain check (x509)"),
    (r"cbor2", "CBOR"),
    (r"'(epoll|poll|select|control)' of|select\.(epoll|poll|select)", "event loop wait"),
    (
        r"'(recv|recv_into|recvfrom|send|sendall|sendmsg|connect|accept|read|write)' of",
        "transport (socket I/O)",
    ),
    (r"hmac|openssl_sha|_hashlib|sha256|sha384", "SigV4 (hashing)"),
    (r"json|binascii|b64", "JSON + base64"),
    (r"cipher|aes|padding|ctx", "CMS (AES, ASN.1)"),
)
#: Categories of Python functions, by file path (first match wins).
FILE_RULES: tuple[tuple[str, str], ...] = (
    (r"attestation/sigv4|/hmac\.py|/hashlib\.py|kms/auth|botocore/auth", "SigV4"),
    (r"attestation/cms|/asn1crypto/", "CMS (AES, ASN.1)"),
    (r"attestation/(verify|policy|_chain|_model)", "verification pipeline (Python)"),
    (r"attestation/pki", "NSM leaf certificate (Python)"),
    (r"attestation/document|/cbor2/", "CBOR"),
    (r"attestation/nsm|enclave/nsm|host/nsm", "NSM (core, wire codec, client)"),
    (
        r"/http/|/httptools/|/uvicorn/|/h11/|/email/|/urllib/|/urllib3/|enclave/.*http|kms/(app|transport)",
        "HTTP",
    ),
    (r"botocore/(awsrequest|httpsession|endpoint)", "HTTP"),
    (r"/botocore/|/boto3/", "boto3/botocore machinery"),
    (r"/json/|/base64\.py", "JSON + base64"),
    (r"/asyncio/|/selectors\.py|/socket\.py|/ssl\.py|vsock|transport", "transport (socket I/O)"),
    (r"/kms/", "KMS service logic"),
    (r"/enclave/", "SDK logic"),
    (r"host/nsm_sim", "NSM device server"),
    (r"/logging/", "logging"),
)
#: Files whose time is charged to whoever called them (library glue: cryptography's Python layer, typing,
#: dataclasses, ...), so that e.g. x509 name handling inside the verifier counts as chain check.
PASS_THROUGH = re.compile(r"/cryptography/|/typing\.py|/dataclasses\.py|/abc\.py|/enum\.py|/functools\.py")


#: How far up the callers a C function's or glue function's time is traced before it counts as "other".
MAX_CALLER_DEPTH = 6


def _builtin_category(name: str) -> str | None:
    low = name.lower()
    for pattern, category in BUILTIN_RULES:
        if re.search(pattern, low):
            return category
    return None


def _file_category(path: str) -> str:
    for pattern, category in FILE_RULES:
        if re.search(pattern, path):
            return category
    return "other"


def categorize(profile: Path) -> dict[str, float]:
    """Seconds of own time per category in one pstats file."""
    stats: dict[Any, Any] = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]

    def category_of(func: tuple[str, int, str], depth: int = 0) -> dict[str, float]:
        """Fractions of ``func``'s own time per category (C functions and glue split among their callers)."""
        path, _, name = func
        if path != "~" and not PASS_THROUGH.search(path):
            return {_file_category(path): 1.0}
        named = _builtin_category(name) if path == "~" else None
        if named is not None or depth > MAX_CALLER_DEPTH or func not in stats:
            return {named or "other": 1.0}
        callers = stats[func][4]
        total = sum(v[2] for v in callers.values()) or 1.0
        shares: dict[str, float] = defaultdict(float)
        for caller, v in callers.items():
            for cat, frac in category_of(caller, depth + 1).items():
                shares[cat] += frac * v[2] / total
        return shares or {"other": 1.0}

    totals: dict[str, float] = defaultdict(float)
    for func, (_, _, tottime, _, _) in stats.items():
        if tottime <= 0:
            continue
        for cat, frac in category_of(func).items():
            totals[cat] += tottime * frac
    return dict(totals)


def per_request(totals: dict[str, float], requests: int) -> dict[str, float]:
    """Microseconds per request per category, largest first (CPU time: an idle wait costs ~0)."""
    rows = {k: round(v * 1e6 / max(requests, 1), 1) for k, v in totals.items()}
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]))


def table(side: str, rows: dict[str, float]) -> list[str]:
    total = sum(rows.values()) or 1.0
    return [
        f"{side}: "
        + ", ".join(f"{k} {v:,.0f} us ({100 * v / total:.0f}%)" for k, v in rows.items() if v >= 1)
    ]
