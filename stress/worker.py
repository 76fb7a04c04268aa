"""One enclave client of ``make stress``, in its own process: ``python -m stress.worker --bytes N``.

It is a simulated enclave app: ``NITRO_SIM_HOME``, ``NITRO_SIM_NSM`` (its own nsm-sim) and ``NITRO_SIM_CID``
come from the orchestrator, credentials from kms-sim's file in the home (the SDK's simulation rule: none on
the command line or in the environment), and it calls the SDK exactly as an app does:
``enclave.client("kms").generate_random(NumberOfBytes=N)``, default timeouts and retries.

Line protocol (stdin: commands; stdout: one JSON object per line):

    worker: {"ready": true, "pid": P}
    orch:   run K        K calls, one line each as it ends, then {"done": K}
                         {"ok": 1, "id": REQUEST_ID, "retries": R, "p": PLAINTEXT_HEX, "t0": NS, "t1": NS}
                         {"err": CLASS, "code": KMS_CODE|null, "msg": ONE_LINE, "t0": NS, "t1": NS}
    orch:   close        close the client's connection (the next call opens a new one); {"closed": true}
    orch:   secrets      {"key": PKCS8_DER_HEX}: the client's RSA private key, so the orchestrator can search
                         every log, capture and file for it by value (it never leaves this pipe)
    orch:   quit         exit 0

Times are CLOCK_MONOTONIC nanoseconds (one clock for every process of the machine), so the orchestrator
can tell which fault a failure fell under. ``CLASS`` is the exception's class name; the orchestrator
decides whether it is a documented SDK error. After a failed call the worker waits
:data:`FAILURE_PAUSE_S`, as an app with a retry loop of its own would, instead of failing its remaining
calls in a burst while a device restarts. Plaintexts go to the orchestrator only (for the leak scan).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from cryptography.hazmat.primitives import serialization

import enclave
from enclave.errors import ClientError

#: Pause after a failed call before the next one (an app's own back-off; the SDK's retries come first).
FAILURE_PAUSE_S = 0.2
#: Bound on one error message passed on (a message is one line; longer ones are cut).
MAX_MESSAGE_CHARS = 300
#: Bound on the calls of one ``run`` command.
MAX_RUN_CALLS = 100_000


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _private_key_der(kms: Any) -> bytes:
    """The client's private key as PKCS#8 DER: read from the SDK's private attribute, which has no public
    accessor on purpose (the key never leaves the enclave; here it goes to the leak scan's search list)."""
    key = kms._key  # a test instrument reads it; apps cannot
    return bytes(
        key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _call(kms: Any, n: int) -> dict[str, Any]:
    t0 = time.monotonic_ns()
    try:
        out = kms.generate_random(NumberOfBytes=n)
    except Exception as exc:  # every failure is one line to the orchestrator, which classifies it
        code = exc.code if isinstance(exc, ClientError) else None
        message = " ".join(str(exc).split())[:MAX_MESSAGE_CHARS]
        result = {
            "err": type(exc).__name__,
            "code": code,
            "msg": message,
            "t0": t0,
            "t1": time.monotonic_ns(),
        }
        time.sleep(FAILURE_PAUSE_S)
        return result
    meta = out["ResponseMetadata"]
    return {
        "ok": 1,
        "id": meta["RequestId"],
        "retries": meta["RetryAttempts"],
        "p": out["Plaintext"].hex(),
        "t0": t0,
        "t1": time.monotonic_ns(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.worker")
    parser.add_argument("--bytes", type=int, default=32, help="NumberOfBytes of every call")
    args = parser.parse_args(argv)
    kms = enclave.client("kms", region_name="us-east-1")
    _emit({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "run" and len(words) == 2 and words[1].isdigit():
            count = min(int(words[1]), MAX_RUN_CALLS)
            for _ in range(count):
                _emit(_call(kms, args.bytes))
            _emit({"done": count})
        elif words[0] == "close":
            kms.close()
            _emit({"closed": True})
        elif words[0] == "secrets":
            _emit({"key": _private_key_der(kms).hex()})
        else:
            _emit({"error": f"unknown command {line.strip()[:80]!r}"})
            return 1
    kms.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
