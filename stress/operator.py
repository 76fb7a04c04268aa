"""The operator: creates custom key stores with boto3, straight to kms-sim, while its services crash.

CreateCustomKeyStore is not idempotent: when kms-sim dies after committing a store but before its answer
left, boto3's retry gets CustomKeyStoreNameInUseException. Such a store is *unacknowledged* (it may or may
not exist: nothing is claimed for it). Every *acknowledged* store (an answer with its ID) must be in the
database and have its audit record afterwards (:mod:`stress.ledger`). Each store gets a fresh
:data:`PASSWORD_CHARS`-character password, a secret the leak scan searches for. Bounded: at most
:data:`MAX_ATTEMPTS` creates, one every :data:`INTERVAL_S`.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from typing import Any

from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from nitro_sim.stack import KmsSim

__all__ = ["MAX_ATTEMPTS", "Operator"]

#: KMS's KeyStorePassword is 7..32 characters; the longest, so the leak scan can find it (>= 31 bytes).
PASSWORD_CHARS = 32
#: Bound on create attempts of one run, and the pause between two.
MAX_ATTEMPTS = 40
INTERVAL_S = 0.25
#: A syntactically valid trust anchor (kms-sim simulates CloudHSM clusters; it keeps the text only).
TRUST_ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
_CLUSTER_CHARS = string.ascii_lowercase[:26] + "234567"


class Operator:
    """Creates up to ``count`` key stores in a thread (:meth:`start`, :meth:`stop`)."""

    def __init__(self, *, kms: KmsSim, count: int) -> None:
        self.kms = kms
        self.count = count
        self.acknowledged: list[tuple[str, str]] = []  # (store ID, request ID)
        self.unacknowledged: list[str] = []  # names whose answer was lost
        self.failures: list[dict[str, Any]] = []  # {"err", "code", "t0", "t1"}
        self.passwords: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        config = Config(
            retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=5, read_timeout=30
        )
        client = self.kms.boto3_client(config=config)
        for attempt in range(MAX_ATTEMPTS):
            if len(self.acknowledged) >= self.count or self._stop.is_set():
                break
            password = "".join(
                secrets.choice(string.ascii_letters + string.digits) for _ in range(PASSWORD_CHARS)
            )
            self.passwords.append(password)
            name = f"stress-store-{attempt}"
            t0 = time.monotonic_ns()
            try:
                answer = client.create_custom_key_store(
                    CustomKeyStoreName=name,
                    CloudHsmClusterId="cluster-" + "".join(secrets.choice(_CLUSTER_CHARS) for _ in range(11)),
                    TrustAnchorCertificate=TRUST_ANCHOR,
                    KeyStorePassword=password,
                )
            except ClientError as error:
                code = str(error.response.get("Error", {}).get("Code"))
                if code == "CustomKeyStoreNameInUseException":
                    self.unacknowledged.append(name)
                else:
                    self.failures.append({"err": code, "code": code, "t0": t0, "t1": time.monotonic_ns()})
            except BotoCoreError as error:
                self.failures.append(
                    {"err": type(error).__name__, "code": None, "t0": t0, "t1": time.monotonic_ns()}
                )
            else:
                request_id = str(answer["ResponseMetadata"]["RequestId"])
                self.acknowledged.append((str(answer["CustomKeyStoreId"]), request_id))
            self._stop.wait(INTERVAL_S)
