"""Scenario 3, part two: the attested round trip's pieces timed in-process, with no profiler and no I/O.

Each piece is our own code called as the programs call it (same build, same keys, same documents):
- nsm-sim's work: ``NSM.attestation(public_key=...)`` (a fresh document per request);
- the SDK's work: SigV4 signing of the request (``attestation.sigv4``), JSON + base64 both ways, and
  ``attestation.cms.decrypt_ciphertext_for_recipient``;
- kms-sim's work: the sans-IO pipeline ``Service.handle`` (body bound, SigV4 check, JSON, document
  verification, policy, random bytes, CMS, audit line), and inside it the Verifier and the CMS build alone.
Their sum against the floor and against the CPU per call the processes really spent (scenario 1, /proc)
splits the cost into crypto, our Python around it, and the HTTP/transport/event-loop shells.
"""

from __future__ import annotations

import base64
import configparser
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.harness import Pinning, Settings, Summary, pinned_self, summarize, time_op
from bench.model import Row, ScenarioResult

CPU = 0
MODULE_ID = "i-0b1e2c3d4e5f60718-enc0123456789abcdef"
N = 32
#: Requests (each with a new document) per timed round of kms-sim's pipeline.
FRESH_PER_ROUND = 150


def run(settings: Settings, pinning: Pinning, home: Path, result: ScenarioResult) -> None:
    from attestation.cms import (
        build_ciphertext_for_recipient,
        decrypt_ciphertext_for_recipient,
        recipient_key_id,
    )
    from attestation.nsm import NSM
    from attestation.pki import SimulatedPKI
    from attestation.sigv4 import sign_request
    from attestation.verify import Verifier
    from kms.server import Settings as KmsSettings
    from kms.server import build_service
    from kms.service import Request

    home.mkdir(parents=True, exist_ok=True)
    service = build_service(KmsSettings(sim_home=str(home)))  # as `kms-sim serve` (audit log on)
    creds = configparser.ConfigParser()
    creds.read(home / "kms" / "credentials")
    access_key, secret_key = (
        creds["nitro-sim"]["aws_access_key_id"],
        creds["nitro-sim"]["aws_secret_access_key"],
    )
    at = dt.datetime.now(dt.UTC)
    pki = SimulatedPKI.load_or_create(home, at=at)
    nsm = NSM(pki=pki, module_id=MODULE_ID)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    doc = nsm.attestation(public_key=spki, at=at)
    # As kms-sim builds: the recipient's key and rid derived once per recipient key, not per request.
    public_key = key.public_key()
    key_id = recipient_key_id(spki)
    verifier = Verifier(roots=[pki.root_der])

    def body_of(document: bytes) -> bytes:
        recipient = {
            "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "AttestationDocument": base64.b64encode(document).decode(),
        }
        return json.dumps({"NumberOfBytes": N, "Recipient": recipient}).encode()

    def signed_request(body: bytes, now: dt.datetime) -> Request:
        headers = {"host": "127.0.0.1:1", "x-amz-target": "TrentService.GenerateRandom",
                   "content-type": "application/x-amz-json-1.1"}  # fmt: skip
        added = sign_request("POST", "/", "", headers, body, access_key=access_key, secret_key=secret_key,
                             session_token=None, region="us-east-1", service="kms", at=now)  # fmt: skip
        headers.update({k.lower(): v for k, v in added.items()})
        return Request(
            method="POST", path="/", query="", headers=list(headers.items()), body=body, source_ip="127.0.0.1"
        )

    body = body_of(doc)
    request = signed_request(body, at)
    response = service.handle(request, at=at, tick=time.monotonic())
    if response.status != 200:
        raise RuntimeError(f"kms pipeline answered {response.status}: {response.body[:200]!r}")
    reply = json.loads(response.body)
    blob = base64.b64decode(reply["CiphertextForRecipient"])
    if len(decrypt_ciphertext_for_recipient(blob, key)) != N:
        raise RuntimeError("decrypted plaintext has the wrong length")

    pieces: dict[str, tuple[str, Callable[[], object]]] = {
        "  of which: Verifier.verify, chain cached": ("", lambda: verifier.verify(doc, at=at)),
        "  of which: CMS build (urandom, RSA-OAEP, AES)": (
            "",
            lambda: build_ciphertext_for_recipient(os.urandom(N), public_key, key_id=key_id),
        ),
        "NSM attestation document (nsm-sim's core)": (
            "nsm-sim",
            lambda: nsm.attestation(public_key=spki, at=at),
        ),
        "SigV4 sign (SDK)": ("client", lambda: signed_request(body, at)),
        "JSON + base64, request and reply (SDK)": (
            "client",
            lambda: (body_of(doc), base64.b64decode(json.loads(response.body)["CiphertextForRecipient"])),
        ),
        "CMS parse + decrypt (SDK)": ("client", lambda: decrypt_ciphertext_for_recipient(blob, key)),
    }
    layout = pinning.describe(f"this process on CPU {CPU}")
    per_side: dict[str, float] = {}
    data: dict[str, float] = {}
    # kms-sim caches the verification of exact document bytes, so its pipeline is timed on requests that
    # each carry a new document, as the SDK sends them (one per call); built before the clock starts.
    per_round = 3 if settings.quick else FRESH_PER_ROUND
    fresh = [
        signed_request(body_of(nsm.attestation(public_key=spki, at=at)), at)
        for _ in range(per_round * settings.op_rounds)
    ]
    with pinned_self(pinning, CPU):
        rounds = []
        for i in range(settings.op_rounds):
            batch = fresh[i * per_round : (i + 1) * per_round]
            start = time.perf_counter()
            for req in batch:
                service.handle(req, at=at, tick=time.monotonic())
            rounds.append((time.perf_counter() - start) * 1e6 / len(batch))
        s_kms = summarize(rounds)
        name = "KMS pipeline Service.handle, new document each (kms-sim's core)"
        result.rows.append(Row(case=f"in-process: {name}", unit="us/op", value=s_kms, layout=layout))
        data[name] = round(s_kms.median, 1)
        per_side["kms-sim"] = s_kms.median
        for name, (side, fn) in pieces.items():
            s: Summary = time_op(fn, repeats=settings.op_rounds, seconds=settings.op_seconds)
            result.rows.append(Row(case=f"in-process: {name}", unit="us/op", value=s, layout=layout))
            data[name.strip()] = round(s.median, 1)
            if side:
                per_side[side] = per_side.get(side, 0.0) + s.median
    result.data["components_us"] = data
    result.data["components_by_process_us"] = {k: round(v, 1) for k, v in per_side.items()}
    total = sum(per_side.values())
    result.notes.append(
        "In-process pieces of one attested call (no I/O, no profiler): "
        + ", ".join(f"{k} {v:,.0f} us" for k, v in per_side.items())
        + f"; {total:,.0f} us in all. The processes' CPU per call beyond these (scenario 1) is the HTTP, "
        "framing, event-loop and socket shells around them."
    )
