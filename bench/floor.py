"""Scenario 3: the crypto floor, in-process, on one core.

One attested GenerateRandom cannot avoid four public-key operations (deps-and-costs §5):
ECDSA P-384 sign of the attestation document (enclave), ECDSA P-384 verify of it (KMS), RSA-2048
OAEP-SHA-256 encrypt of the content key (KMS), RSA-2048 OAEP decrypt of it (enclave). Their summed
median cost is the floor: no implementation on this core can do more round trips per second.
Scenario 4's floors (one and five ECDSA verifications) come from the same measurements.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from bench.harness import Pinning, Settings, Summary, pinned_self, time_op
from bench.model import Row, ScenarioResult

#: Size of what the enclave signs: a COSE Sig_structure over a typical NSM payload (16 PCRs, 5 certs, SPKI).
SIGNED_BYTES = 4_600
#: The content key RSA-OAEP wraps in CiphertextForRecipient (AES-256).
WRAPPED_KEY_BYTES = 32
RSA_BITS = 2048
FLOOR_CPU = 0


@dataclass(frozen=True, slots=True)
class Operations:
    """The four operations, each ready to call (fresh keys, a document-sized message, a wrapped key)."""

    sign: Callable[[], object]
    verify: Callable[[], object]
    encrypt: Callable[[], object]
    decrypt: Callable[[], object]

    def by_name(self) -> dict[str, Callable[[], object]]:
        return {
            "ECDSA P-384 sign (document)": self.sign,
            "ECDSA P-384 verify": self.verify,
            "RSA-2048 OAEP encrypt": self.encrypt,
            "RSA-2048 OAEP decrypt": self.decrypt,
        }


def operations() -> Operations:
    ec_key = ec.generate_private_key(ec.SECP384R1())
    ec_pub = ec_key.public_key()
    message = os.urandom(SIGNED_BYTES)
    signature = ec_key.sign(message, ec.ECDSA(hashes.SHA384()))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    rsa_pub = rsa_key.public_key()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    content_key = os.urandom(WRAPPED_KEY_BYTES)
    wrapped = rsa_pub.encrypt(content_key, oaep)
    return Operations(
        sign=lambda: ec_key.sign(message, ec.ECDSA(hashes.SHA384())),
        verify=lambda: ec_pub.verify(signature, message, ec.ECDSA(hashes.SHA384())),
        encrypt=lambda: rsa_pub.encrypt(content_key, oaep),
        decrypt=lambda: rsa_key.decrypt(wrapped, oaep),
    )


def measure_ops(settings: Settings) -> dict[str, Summary]:
    """Median per-op microseconds of the four unavoidable operations."""
    return {
        name: time_op(fn, repeats=settings.op_rounds, seconds=settings.op_seconds)
        for name, fn in operations().by_name().items()
    }


def floor_round(
    pinning: Pinning, ops: Sequence[Callable[[], object]] | None = None
) -> Callable[[float], float]:
    """A floor "client" for interleaved rounds: for ``seconds``, ``ops`` (default: all four operations)
    back to back on FLOOR_CPU; returns the sets per second, i.e. the floor in round trips per second for
    that round."""
    ops = list(operations().by_name().values()) if ops is None else list(ops)

    def run_round(seconds: float) -> float:
        with pinned_self(pinning, FLOOR_CPU):
            count = 0
            start = time.perf_counter()
            deadline = start + seconds
            while time.perf_counter() < deadline:
                for op in ops:
                    op()
                count += 1
            return count / (time.perf_counter() - start)

    return run_round


def run(settings: Settings, pinning: Pinning) -> ScenarioResult:
    result = ScenarioResult(key="3", title="Crypto floor (in-process, one core)")
    with pinned_self(pinning, FLOOR_CPU):
        ops = measure_ops(settings)
    layout = pinning.describe(f"this process on CPU {FLOOR_CPU}")
    for name, s in ops.items():
        result.rows.append(Row(case=name, unit="us/op", value=s, layout=layout))
    floor_us = sum(s.median for s in ops.values())
    verify_us = ops["ECDSA P-384 verify"].median
    sign_us = ops["ECDSA P-384 sign (document)"].median
    floors: dict[str, Any] = {
        "floor_us": floor_us,
        "floor_per_s": 1e6 / floor_us,
        "floor_reused_doc_per_s": 1e6 / (floor_us - sign_us),
        "verify_us": verify_us,
        "one_verify_per_s": 1e6 / verify_us,
        "five_verify_per_s": 1e6 / (5 * verify_us),
    }
    result.data["floors"] = floors
    result.data["ops_us"] = {name: s.as_dict() for name, s in ops.items()}
    result.notes.append(
        f"Floor: sign + verify + OAEP encrypt + OAEP decrypt = {floor_us:.0f} us, i.e. "
        f"{floors['floor_per_s']:,.0f} attested round trips/s on one core "
        f"({floors['floor_reused_doc_per_s']:,.0f}/s if the document were reused, no sign)."
    )
    return result
