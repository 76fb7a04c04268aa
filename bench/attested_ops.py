"""Scenario 8: attested GenerateRandom and attested Decrypt, fresh document and reused, against their floors.

Four configurations, one SDK client process each, every process pinned to CPU 0 and the rounds interleaved
(floors, A, B, C, D, floors, A, ...), all through one ``kms-sim``, one ``vsock-proxy`` and one ``nsm-sim``:

- GenerateRandom, N=32, a fresh attestation document per call (the SDK's default; scenario 1's case);
- the same client with ``attestation_reuse_seconds`` = :data:`REUSE_SECONDS`;
- Decrypt of a :data:`SECRET_BYTES`-byte secret, fresh document per call; the symmetric key is created and
  the secret encrypted with boto3 against the same kms-sim before the rounds;
- the same Decrypt with ``attestation_reuse_seconds``.

Each is held against the public-key work it cannot avoid, measured in this process in the same rotation on
the same core (``bench.floor``'s operations):

- fresh document: ECDSA P-384 sign (the NSM) + verify (kms-sim) + RSA-2048 OAEP encrypt (kms-sim) + decrypt
  (the SDK), scenario 3's set;
- reused document: RSA-OAEP encrypt + decrypt only. The SDK does not ask the NSM again (no sign) and kms-sim's
  exact-document cache (``kms.recipient``) does not verify the same bytes again (no verify);
- Decrypt adds one AES-256-GCM open (kms-sim opening the ciphertext blob), timed here on its own and added
  to the set's time: ~1 us against ~1 ms, it does not earn a rotation slot of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench import floor
from bench.clients import Series, Worker, interleave, quit_workers, start_workers
from bench.harness import Pinning, Settings, pinned_self, time_op
from bench.model import BenchError, Ratio, Row, ScenarioResult, reason
from bench.stack import KmsServer, enclave_env, start_kms, start_nsm, start_proxy
from nitro_sim.procs import Process, ProcessError, ProcessGroup

TITLE = "Attested KMS operations: GenerateRandom and Decrypt, fresh and reused document, against their floors"
CPU = 0
#: GenerateRandom's NumberOfBytes here: scenario 1's sequential case.
RANDOM_BYTES = 32
#: The secret Decrypt opens: the size of an AES-256 data key, what an enclave typically unwraps.
SECRET_BYTES = 32
#: The SDK's attestation_reuse_seconds in the reuse configurations: well inside the SDK's bound (300 s,
#: enclave.kms.MAX_ATTESTATION_REUSE_SECONDS) and kms-sim's document age limit (5 min), and longer than a
#: default run, so one document serves a whole configuration.
REUSE_SECONDS = 60.0
#: The EncryptionContext the secret is encrypted under (and every Decrypt must repeat).
CONTEXT = {"purpose": "bench scenario 8"}
#: A kms-sim ciphertext blob's header (kms.ciphertext: magic 3, version 1, ID length 1, key ID 36, nonce 12),
#: part of the associated data an AES-GCM open authenticates.
BLOB_HEADER_BYTES = 53
#: Above this spread of an interleaved floor's rounds, the report calls the run noisy (as scenario 1).
NOISY_SPREAD_PCT = 5.0

GR_FRESH = f"attested GenerateRandom N={RANDOM_BYTES}, fresh document"
GR_REUSED = f"attested GenerateRandom N={RANDOM_BYTES}, document reused ({REUSE_SECONDS:g} s)"
DEC_FRESH = f"attested Decrypt of {SECRET_BYTES} bytes, fresh document"
DEC_REUSED = f"attested Decrypt of {SECRET_BYTES} bytes, document reused ({REUSE_SECONDS:g} s)"
FLOOR_FRESH = "crypto floor, fresh document: ECDSA P-384 sign + verify + RSA-2048 OAEP encrypt + decrypt"
FLOOR_REUSED = "crypto floor, reused document: RSA-2048 OAEP encrypt + decrypt"
AES_OPEN = f"AES-256-GCM open of the {SECRET_BYTES}-byte secret (Decrypt's floors add one)"
#: Each configuration's floor series, and whether an AES-GCM open is added to it.
FLOOR_OF = {
    GR_FRESH: (FLOOR_FRESH, False),
    GR_REUSED: (FLOOR_REUSED, False),
    DEC_FRESH: (FLOOR_FRESH, True),
    DEC_REUSED: (FLOOR_REUSED, True),
}


def aes_open() -> Callable[[], object]:
    """kms-sim's share of a symmetric Decrypt: one AES-256-GCM open of the secret under a fresh AESGCM
    object, with associated data the size of a blob's header and this context (``kms.ciphertext``)."""
    key, nonce = os.urandom(32), os.urandom(12)
    aad = os.urandom(BLOB_HEADER_BYTES) + json.dumps(CONTEXT, sort_keys=True).encode()
    sealed = AESGCM(key).encrypt(nonce, os.urandom(SECRET_BYTES), aad)
    return lambda: AESGCM(key).decrypt(nonce, sealed, aad)


def encrypt_secret(kms: KmsServer) -> tuple[bytes, str]:
    """CreateKey (SYMMETRIC_DEFAULT) and Encrypt of a random secret under CONTEXT, with boto3, as an
    operator would; returns the CiphertextBlob and the secret's SHA-256 (hex), never the secret."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "kms",
        endpoint_url=kms.url,
        region_name=kms.region,
        aws_access_key_id=kms.access_key,
        aws_secret_access_key=kms.secret_key,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    secret = os.urandom(SECRET_BYTES)
    try:
        key_id = client.create_key(Description="bench scenario 8")["KeyMetadata"]["KeyId"]
        blob = client.encrypt(KeyId=key_id, Plaintext=secret, EncryptionContext=CONTEXT)["CiphertextBlob"]
    except (BotoCoreError, ClientError) as e:
        raise BenchError(f"kms-sim could not make the Decrypt fixture: {e}") from None
    finally:
        client.close()
    return bytes(blob), hashlib.sha256(secret).hexdigest()


def _client_args(kms: KmsServer, proxy_port: int, reuse: float) -> list[str]:
    return ["--access-key", kms.access_key, "--secret-key", kms.secret_key, "--region", kms.region,
            "--proxy-port", str(proxy_port), "--reuse-seconds", f"{reuse:g}"]  # fmt: skip


def run(settings: Settings, pinning: Pinning, home: Path, procs: ProcessGroup, out: ScenarioResult) -> None:
    layout = pinning.describe(f"all processes on CPU {CPU}")
    kms = start_kms(procs, pinning, home, cpu=CPU)
    nsm, nsm_proc = start_nsm(procs, pinning, home, cpu=CPU)
    proxy_port, proxy_proc = start_proxy(procs, pinning, home, cpu=CPU, target_port=kms.port)
    watch: dict[str, Process] = {"kms-sim": kms.proc, "nsm-sim": nsm_proc, "vsock-proxy": proxy_proc}
    env = enclave_env(home, nsm)
    groups: dict[str, Sequence[Worker]] = {}
    for name, reuse in ((GR_FRESH, 0.0), (GR_REUSED, REUSE_SECONDS)):
        groups[name] = start_workers(
            procs, pinning, kind="sdk", count=1, cpu=CPU, settings=settings, env=env,
            args=[*_client_args(kms, proxy_port, reuse), "--n", str(RANDOM_BYTES)],
        )  # fmt: skip
    try:
        blob, digest = encrypt_secret(kms)
        decrypt_args = ["--ciphertext", base64.b64encode(blob).decode(), "--context", json.dumps(CONTEXT),
                        "--plaintext-sha256", digest]  # fmt: skip
        for name, reuse in ((DEC_FRESH, 0.0), (DEC_REUSED, REUSE_SECONDS)):
            groups[name] = start_workers(
                procs, pinning, kind="sdk-decrypt", count=1, cpu=CPU, settings=settings, env=env,
                args=[*_client_args(kms, proxy_port, reuse), *decrypt_args],
            )  # fmt: skip
    except (BenchError, ProcessError) as e:
        out.error = f"Decrypt not measured: {reason(e)}"
    ops = floor.operations()
    with pinned_self(pinning, floor.FLOOR_CPU):
        aes = time_op(aes_open(), repeats=settings.op_rounds, seconds=settings.op_seconds)
    floors = {
        FLOOR_FRESH: floor.floor_round(pinning, [ops.sign, ops.verify, ops.encrypt, ops.decrypt]),
        FLOOR_REUSED: floor.floor_round(pinning, [ops.encrypt, ops.decrypt]),
    }
    series = interleave(groups, settings, watch=watch, in_process=floors)
    for ws in groups.values():
        quit_workers(procs, ws)
    procs.stop_all()
    _results(series, aes_us=aes.median, layout=layout, out=out)
    out.rows.append(
        Row(case=AES_OPEN, unit="us/op", value=aes, layout=pinning.describe(f"this process on CPU {CPU}"))
    )


def _row(name: str, series: Series, unit: str, layout: str) -> Row:
    lat = series.latencies()
    return Row(case=name, unit=unit, value=series.rate, p50_us=lat.p(50), p99_us=lat.p(99), layout=layout)


def _results(series: dict[str, Series], *, aes_us: float, layout: str, out: ScenarioResult) -> None:
    floor_rates = {name: series.pop(name).rate for name in (FLOOR_FRESH, FLOOR_REUSED)}
    noisy = any(s.spread_pct > NOISY_SPREAD_PCT for s in floor_rates.values())
    floor_layout = layout if layout.startswith("unpinned") else f"bench process on CPU {floor.FLOOR_CPU}"
    rates: dict[str, float] = {}
    for name, s in series.items():
        out.rows.append(_row(name, s, "req/s", layout))
        rates[name] = s.rate.median
        out.data.setdefault("series", {})[name] = s.as_dict()
        cpu = s.cpu_us_per_call()
        out.data.setdefault("cpu_us_per_call", {})[name] = cpu
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 1)
        out.notes.append(
            f"CPU per call, {name}: {parts} us (sum {sum(cpu.values()):,.0f} us of {1e6 / rates[name]:,.0f} "
            "us per call on one core; from /proc utime+stime over the rounds)"
        )
    for name, summary in floor_rates.items():
        out.rows.append(Row(case=name, unit="sets/s", value=summary, layout=floor_layout))
    out.data["floors_per_s"] = {name: s.median for name, s in floor_rates.items()}
    out.data["aes_gcm_open_us"] = aes_us
    out.data["reuse_seconds"] = REUSE_SECONDS
    for name, rate in rates.items():
        floor_name, with_aes = FLOOR_OF[name]
        floor_rate = 1e6 / (1e6 / floor_rates[floor_name].median + (aes_us if with_aes else 0.0))
        out.ratios.append(
            Ratio(
                name=f"{name} / its crypto floor (same rounds)",
                value=rate / floor_rate,
                noisy=noisy,
                detail=(
                    f"{rate:,.0f} req/s against {floor_rate:,.0f} sets/s of the "
                    f"{floor_name.split(':')[0].removeprefix('crypto floor, ')} floor"
                    + (f" with one AES-GCM open ({aes_us:.1f} us)" if with_aes else "")
                ),
            )
        )
    ideal = floor_rates[FLOOR_REUSED].median / floor_rates[FLOOR_FRESH].median
    for op, fresh, reused in (("GenerateRandom", GR_FRESH, GR_REUSED), ("Decrypt", DEC_FRESH, DEC_REUSED)):
        if fresh in rates and reused in rates:
            out.ratios.append(
                Ratio(
                    name=f"{op}: reused / fresh document (speed-up)",
                    value=rates[reused] / rates[fresh],
                    noisy=noisy,
                    detail=(
                        f"{rates[reused]:,.0f} vs {rates[fresh]:,.0f} req/s; the floors' ratio, all that "
                        f"dropping a sign and a verify can give at the crypto level, is {ideal:.2f}"
                    ),
                )
            )
    if GR_FRESH in rates and DEC_FRESH in rates:
        out.ratios.append(
            Ratio(name="Decrypt / GenerateRandom, fresh document", value=rates[DEC_FRESH] / rates[GR_FRESH])
        )
    if noisy:
        spread = max(s.spread_pct for s in floor_rates.values())
        out.data["noise"] = (
            f"**Noisy run**: an interleaved crypto floor of scenario 8, pure computation on one core, spread "
            f"{spread:.0f}% across its rounds (a quiet machine gives <= {NOISY_SPREAD_PCT:.0f}%): other work "
            "shared this machine; rerun when quiet."
        )
    out.notes.append(
        f"Reuse: the SDK client made with attestation_reuse_seconds={REUSE_SECONDS:g} sends one document "
        "for every call of that window; kms-sim verifies it once and serves the later calls from its "
        "exact-document cache (the age check still runs on every request)."
    )
