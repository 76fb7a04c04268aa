"""A benchmark client in its own process: ``python -m bench.worker KIND [options]``.

Line protocol with the orchestrator (stdin -> commands, stdout -> one JSON object per line):

    worker: {"ready": true, "warmup_calls": n}   after building the client and warming up
    orch:   run START_NS END_NS                 CLOCK_MONOTONIC ns; one untimed call, wait for START,
                                                then call until END (each call's latency recorded)
    worker: {"count": n, "first_ns": .., "last_ns": .., "lat_us": [..]}
    orch:   quit                                (dump the profile if asked, exit 0)

Any failure prints {"error": "<one line>"} and exits 1. KINDs:
- ``boto3``: plain GenerateRandom (no Recipient) through a boto3 KMS client at ``--endpoint``;
- ``sdk``: attested GenerateRandom through ``enclave.client("kms")``: NSM attestation via the simulated
  device (``NITRO_SIM_NSM``), SigV4, HTTP over the simulated vsock to the proxy, CMS decrypted here;
- ``sdk-decrypt``: attested Decrypt through the same client, of one ``--ciphertext`` (base64, made by the
  orchestrator with boto3) under ``--context`` (JSON EncryptionContext); the plaintext is checked against
  ``--plaintext-sha256`` (its digest, so the secret itself is never on a command line);
- ``chain``: the topology floor's client (``bench.chain``): the same round trips and RSA decrypt only.

``--reuse-seconds S`` (``sdk``, ``sdk-decrypt``): the SDK's ``attestation_reuse_seconds``, one document for
every call of S seconds instead of a fresh one per call.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import hmac
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import now_ns

Call = Callable[[], object]


def _generate_random(client: Any, n: int) -> Call:
    """One GenerateRandom of ``n`` bytes per call (boto3's and our SDK's clients answer alike)."""

    def call() -> object:
        out = client.generate_random(NumberOfBytes=n)
        if len(out["Plaintext"]) != n:
            raise RuntimeError(f"asked for {n} bytes, got {len(out['Plaintext'])}")
        return out

    return call


def _boto3_call(args: argparse.Namespace) -> Call:
    import boto3
    from botocore.config import Config

    logging.getLogger("botocore").setLevel(logging.CRITICAL)
    client = boto3.client(
        "kms",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=args.access_key,
        aws_secret_access_key=args.secret_key,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    return _generate_random(client, args.n)


def _decrypt(client: Any, blob: bytes, context: dict[str, str], digest: bytes) -> Call:
    """One Decrypt of ``blob`` per call; the plaintext must hash to ``digest``."""

    def call() -> object:
        out = client.decrypt(CiphertextBlob=blob, EncryptionContext=context)
        if not hmac.compare_digest(hashlib.sha256(out["Plaintext"]).digest(), digest):
            raise RuntimeError("Decrypt returned a plaintext other than the one encrypted")
        return out

    return call


def _sdk_client(args: argparse.Namespace) -> Any:
    # The SDK under test; NITRO_SIM_HOME, NITRO_SIM_NSM and NITRO_SIM_CID come from the orchestrator.
    import enclave

    kwargs: dict[str, Any] = {
        "use_ssl": False,  # kms-sim serves plain HTTP on loopback here (no --tls)
        "region_name": args.region,
        "aws_access_key_id": args.access_key,
        "aws_secret_access_key": args.secret_key,
        "attestation_reuse_seconds": args.reuse_seconds,
    }
    if args.proxy_port is not None:
        kwargs["proxy_port"] = args.proxy_port
    return enclave.client("kms", **kwargs)


def _sdk_call(args: argparse.Namespace) -> Call:
    return _generate_random(_sdk_client(args), args.n)


def _sdk_decrypt_call(args: argparse.Namespace) -> Call:
    if args.ciphertext is None or args.plaintext_sha256 is None:
        raise ValueError("sdk-decrypt needs --ciphertext and --plaintext-sha256")
    context = json.loads(args.context)
    if not isinstance(context, dict) or not all(isinstance(v, str) for v in context.values()):
        raise ValueError("--context must be a JSON object of strings")
    blob = base64.b64decode(args.ciphertext, validate=True)
    return _decrypt(_sdk_client(args), blob, context, bytes.fromhex(args.plaintext_sha256))


def _chain_call(args: argparse.Namespace) -> Call:
    from bench.chain import ChainClient

    return ChainClient(args.nsm_socket, args.proxy_socket)


KINDS: dict[str, Callable[[argparse.Namespace], Call]] = {
    "boto3": _boto3_call,
    "sdk": _sdk_call,
    "sdk-decrypt": _sdk_decrypt_call,
    "chain": _chain_call,
}


def _warm_up(call: Call, seconds: float) -> int:
    call()
    calls = 1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        call()
        calls += 1
    return calls


def _wait_until(start_ns: int) -> None:
    left = (start_ns - now_ns()) / 1e9
    if left > 0.002:
        time.sleep(left - 0.002)
    while now_ns() < start_ns:
        pass  # spin the last stretch: all workers start within microseconds of each other


def _run(call: Call, end_ns: int) -> dict[str, Any]:
    lat: list[float] = []
    first = now_ns()
    t = first
    while t < end_ns:
        call()
        t2 = now_ns()
        lat.append((t2 - t) / 1000.0)
        t = t2
    return {"count": len(lat), "first_ns": first, "last_ns": t, "lat_us": [round(x, 1) for x in lat]}


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("kind", choices=tuple(KINDS))
    parser.add_argument("--n", type=int, default=32, help="NumberOfBytes")
    parser.add_argument("--endpoint", help="boto3 endpoint_url")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--access-key", default="")
    parser.add_argument("--secret-key", default="")
    parser.add_argument("--proxy-port", type=int, help="sdk: the vsock-proxy port on the parent (CID 3)")
    parser.add_argument("--reuse-seconds", type=float, default=0.0, help="sdk: attestation_reuse_seconds")
    parser.add_argument("--ciphertext", help="sdk-decrypt: the CiphertextBlob, base64")
    parser.add_argument("--context", default="{}", help="sdk-decrypt: the EncryptionContext, JSON")
    parser.add_argument("--plaintext-sha256", help="sdk-decrypt: SHA-256 of the expected plaintext, hex")
    parser.add_argument("--nsm-socket", type=Path, help="chain: the nsm stand-in's Unix socket")
    parser.add_argument("--proxy-socket", type=Path, help="chain: the proxy stand-in's Unix socket")
    parser.add_argument("--warmup-s", type=float, default=0.5)
    parser.add_argument("--profile", help="write a cProfile of the measured runs to this file")
    args = parser.parse_args(argv)
    profiler = cProfile.Profile(time.thread_time) if args.profile else None  # CPU time, as bench.profiled
    try:
        call = KINDS[args.kind](args)
        _emit({"ready": True, "warmup_calls": _warm_up(call, args.warmup_s)})
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            if words[0] != "run" or len(words) != 3:
                _emit({"error": f"unknown command {line.strip()!r}"})
                return 1
            call()  # untimed: reopens a connection the server may have closed while this worker sat idle
            _wait_until(int(words[1]))
            if profiler is not None:
                profiler.enable()
            result = _run(call, int(words[2]))
            if profiler is not None:
                profiler.disable()
            _emit(result)
    except Exception as e:  # one line to the orchestrator, never a traceback
        _emit({"error": f"{type(e).__name__}: {e}"})
        return 1
    if profiler is not None:
        profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
