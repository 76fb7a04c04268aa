"""Scenario 4: attestation documents verified per second by the KMS side, in-process on one core.

The documents come from the simulated NSM exactly as ``nsm-sim`` makes them (a fresh leaf certificate per
document, as the real NSM does), with an RSA-2048 recipient key; they are verified in rotation by the
``Verifier`` kms-sim uses, once with its chain cache and once without. Floors (from scenario 3's
measurements in the same run): one ECDSA P-384 verification per document (COSE signature only, the whole
chain cached) and five (COSE signature plus the four signatures of a Nitro-shaped chain).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.harness import Pinning, Settings, Summary, pinned_self, summarize, time_op
from bench.model import Ratio, Row, ScenarioResult

TITLE = "Verification alone: documents verified per second (KMS side, in-process, one core)"
VERIFY_CPU = 0
#: Distinct documents verified in rotation (each with its own leaf certificate).
DOCUMENTS = 64
QUICK_DOCUMENTS = 4
#: Documents verified once each (the chain cache can only hit on the CA part of their chain).
FRESH_DOCUMENTS = 700
QUICK_FRESH = 4
CACHED = "with chain cache (documents re-verified)"
UNCACHED = "without chain cache"
FRESH = "with chain cache, every document new"
#: Issue 6 target: with the chain cache, at least this many verifications per second on one core.
TARGET_CACHED_PER_S = 2_500
MODULE_ID = "i-0b1e2c3d4e5f60718-enc0123456789abcdef"


def run(
    settings: Settings, pinning: Pinning, home: Path, floors: dict[str, float] | None, result: ScenarioResult
) -> None:
    from attestation.document import decode_document
    from attestation.nsm import NSM
    from attestation.pki import SimulatedPKI
    from attestation.verify import Verifier

    home.mkdir(parents=True, exist_ok=True)
    at = dt.datetime.now(dt.UTC)
    pki = SimulatedPKI.load_or_create(home, at=at)
    nsm = NSM(pki=pki, module_id=MODULE_ID)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    count = QUICK_DOCUMENTS if settings.quick else DOCUMENTS
    docs = [nsm.attestation(public_key=spki, at=at) for _ in range(count)]
    fresh_count = QUICK_FRESH if settings.quick else FRESH_DOCUMENTS
    fresh = [nsm.attestation(public_key=spki, at=at) for _ in range(fresh_count)]
    check_at = at + dt.timedelta(seconds=1)
    layout = pinning.describe(f"this process on CPU {VERIFY_CPU}")
    rates: dict[str, float] = {}
    with pinned_self(pinning, VERIFY_CPU):
        for label, cache in ((CACHED, True), (UNCACHED, False)):
            verifier = Verifier(roots=[pki.root_der], chain_cache=cache)
            for doc in docs:  # fail loudly before timing if documents do not verify; fills the cache
                verifier.verify(doc, at=check_at)
            rotation = itertools.cycle(docs)
            per_op = time_op(
                lambda v=verifier, r=rotation: v.verify(next(r), at=check_at),
                repeats=settings.op_rounds,
                seconds=settings.op_seconds * 5,
            )
            per_s = Summary(
                median=1e6 / per_op.median, low=1e6 / per_op.high, high=1e6 / per_op.low, rounds=per_op.rounds
            )
            rates[label] = per_s.median
            result.rows.append(Row(case=f"Verifier, {label}", unit="verif/s", value=per_s, layout=layout))
        # Each document once, as kms-sim sees them when every request brings a fresh one.
        verifier = Verifier(roots=[pki.root_der], chain_cache=True)
        verifier.verify(docs[0], at=check_at)
        per_round = max(1, len(fresh) // settings.op_rounds)
        fresh_rates = []
        for i in range(0, len(fresh) - per_round + 1, per_round):
            batch = fresh[i : i + per_round]
            start = time.perf_counter()
            for doc in batch:
                verifier.verify(doc, at=check_at)
            fresh_rates.append(len(batch) / (time.perf_counter() - start))
        per_s = summarize(fresh_rates)
        rates[FRESH] = per_s.median
        result.rows.append(Row(case=f"Verifier, {FRESH}", unit="verif/s", value=per_s, layout=layout))
    cached, uncached, fresh_rate = rates[CACHED], rates[UNCACHED], rates[FRESH]
    leaves = len({decode_document(d).document.certificate for d in fresh})
    result.ratios.append(
        Ratio(
            name=f"with chain cache / target {TARGET_CACHED_PER_S:,}/s",
            value=cached / TARGET_CACHED_PER_S,
            target=1.0,
            detail=f"{cached:,.0f} verifications/s with the chain cache on one core",
        )
    )
    result.ratios.append(Ratio(name="with / without chain cache", value=cached / uncached))
    result.ratios.append(
        Ratio(
            name=f"fresh documents (cache on) / target {TARGET_CACHED_PER_S:,}/s",
            value=fresh_rate / TARGET_CACHED_PER_S,
            target=1.0,
            detail=(
                f"{fresh_rate:,.0f}/s for {fresh_count} new documents carrying {leaves} distinct leaf "
                "certificate(s): the chain cache is keyed by leaf and cabundle, so it hits only when the "
                "NSM reuses its leaf"
            ),
        )
    )
    if floors is not None:
        result.ratios.append(
            Ratio(
                name="with chain cache / floor of 1 ECDSA verify", value=cached / floors["one_verify_per_s"]
            )
        )
        result.ratios.append(
            Ratio(
                name="without chain cache / floor of 5 ECDSA verifies",
                value=uncached / floors["five_verify_per_s"],
            )
        )
        result.notes.append(
            f"Floors from scenario 3: one ECDSA P-384 verify {floors['one_verify_per_s']:,.0f}/s, "
            f"five {floors['five_verify_per_s']:,.0f}/s."
        )
    result.notes.append(
        f"{count} distinct documents from the simulated NSM, verified in rotation (their chains cached after "
        f"the first pass); then {fresh_count} new ones, each verified once, as kms-sim sees them."
    )
