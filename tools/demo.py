"""`make demo`: the main job of the project, end to end.

Stage 1 (attestation core): a simulated NSM issues a document binding an RSA key; the verifier checks it
against the simulated root, and a real AWS document against the real AWS root at its own time.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation import AttestationError, Verifier, aws_nitro_root
from attestation.document import decode_document
from attestation.nsm import simulate_document
from attestation.pki import SimulatedPKI
from attestation.policy import AllOf, MaxAge, PCRs, RejectDebug, RSAPublicKey

REAL_DOC = Path(__file__).resolve().parents[2] / "shared/test-vectors/attestation"


def main() -> int:
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="nitro-sim-") as tmp:
        home = Path(tmp)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pcr0 = bytes.fromhex("ab" * 48)
        doc = simulate_document(home, at=now, public_key=spki, pcrs={0: pcr0, 1: b"\1" * 48, 2: b"\2" * 48})
        pki = SimulatedPKI.load_or_create(home, at=now)
        policy = AllOf(PCRs({0: pcr0}), RejectDebug(), MaxAge(timedelta(minutes=5)), RSAPublicKey())
        try:
            verified = Verifier(roots=[pki.root_der]).verify(doc, at=now, policy=policy)
        except AttestationError as exc:
            print(f"FAILED: simulated document: {exc}")
            return 1
        print(f"simulated document: {len(doc)} bytes, module {verified.module_id}")
        print("  verified: COSE ES384 signature, chain to the simulated root, PCR0, not debug, age, RSA key")
        try:
            Verifier(roots=[aws_nitro_root()]).verify(doc, at=now)
        except AttestationError as exc:
            print(f"  refused under the real AWS root, as it must be: {exc}")
        else:
            print("FAILED: a simulated document verified under the real AWS root")
            return 1
        for path in sorted(REAL_DOC.glob("*.cbor")):
            data = path.read_bytes()
            real = Verifier(roots=[aws_nitro_root()])
            try:
                checked = real.verify(data, at=_doc_time(data))
            except AttestationError as exc:
                print(f"FAILED: real document {path.name}: {exc}")
                return 1
            print(f"real AWS document {path.name}: verified at its own time ({checked.issued_at:%Y-%m-%d})")
    return 0


def _doc_time(data: bytes) -> datetime:
    return decode_document(data).document.issued_at


if __name__ == "__main__":
    sys.exit(main())
