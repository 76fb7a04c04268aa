"""The dice app's tests, on attested-random's fixtures and a fake source.

- In this process as the enclave's app: ``enclave_kms`` (the SDK's client, attested by the simulated NSM
  ``nsm``), with ``kms_sim``'s policy, faults and audit records.
- The real image: ``built_enclave`` builds this directory's Dockerfile with attested-random's nitro-cli,
  ``running_enclave`` runs it beside ``kms_sim``, and the test asks it for rolls over vsock as the parent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from dice import MAX_DICE, PORT, answer, parse_request, roll

import enclave
from enclave import vsock

#: PCR0 of an image that is not ours: KMS must refuse it.
OTHER_IMAGE = hashlib.sha384(b"someone else's enclave image").hexdigest()
#: PCR0 this test's simulated enclave reports (its nitro_pcr marker).
MY_IMAGE = hashlib.sha384(b"the dice image").hexdigest()
#: The directory of the app's Dockerfile.
PROJECT = Path(__file__).resolve().parents[1]
#: Bound on waiting for the enclave's app to listen (run-enclave returns before it does).
LISTEN_WAIT_S = 30.0


def allow_only(pcr0: str) -> dict[str, Any]:
    """A KMS policy for kms-sim's principal: GenerateRandom only for an enclave whose PCR0 is ``pcr0``."""
    condition = {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0}}
    statement = {"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*", "Condition": condition}
    return {"nitro-sim": {"Version": "2012-10-17", "Statement": [statement]}}


def test_rolls_come_from_attested_kms_calls(enclave_kms: Any, kms_sim: Any, nsm: Any) -> None:
    rolls = roll(enclave_kms, 20, sides=6)
    assert len(rolls) == 20
    assert all(1 <= r <= 6 for r in rolls)
    records = kms_sim.audit()
    assert records
    for record in records:
        assert record["eventName"] == "GenerateRandom"
        recipient = record["additionalEventData"]["recipient"]
        assert base64.b64decode(recipient["attestationDocumentEnclaveImageDigest"]) == nsm.pcrs[0]


def test_kms_refuses_another_image(enclave_kms: Any, kms_sim: Any) -> None:
    kms_sim.set_policy(allow_only(OTHER_IMAGE))
    with pytest.raises(enclave_kms.exceptions.AccessDeniedException):
        roll(enclave_kms, 1)
    assert answer(enclave_kms, b"2d6") == {"error": "AccessDeniedException"}
    assert kms_sim.audit()[-1]["errorCode"] == "AccessDeniedException"


@pytest.mark.nitro_pcr(0, MY_IMAGE)
def test_kms_allows_our_image(enclave_kms: Any, kms_sim: Any) -> None:
    kms_sim.set_policy(allow_only(MY_IMAGE))
    assert len(answer(enclave_kms, b"3d20")["rolls"]) == 3


def test_a_kms_failure_is_retried(enclave_kms: Any, kms_sim: Any) -> None:
    kms_sim.inject_fault("KMSInternalException", 1)
    assert len(roll(enclave_kms, 2)) == 2
    assert [r.get("errorCode") for r in kms_sim.audit()] == ["KMSInternalException", None]


class FakeKms:
    """Hands out the given bytes in order, as GenerateRandom's Plaintext."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def generate_random(self, *, NumberOfBytes: int) -> dict[str, Any]:  # noqa: N803 - boto3's name
        out, self.data = self.data[:NumberOfBytes], self.data[NumberOfBytes:]
        return {"Plaintext": out}


def test_bytes_past_the_last_full_set_of_faces_are_thrown_away() -> None:
    # 252 = 256 - 256 % 6: bytes 252..255 would favour faces 1-4, so they are skipped.
    assert roll(FakeKms(bytes([255, 252, 0, 251, 5, 6])), 3) == [1, 6, 6]


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"3d6", (3, 6)), (b"1d2\r", (1, 2)), (b"100d256", (100, 256))],
    ids=["3d6", "1d2-with-CR", "100d256"],
)
def test_requests(line: bytes, expected: tuple[int, int]) -> None:
    assert parse_request(line) == expected


@pytest.mark.parametrize("line", [b"", b"d6", b"3d", b"0d6", b"3d1", b"101d6", b"3d257", b"3x6", b"-1d6"])
def test_bad_requests_are_one_line_errors(line: bytes) -> None:
    result = answer(FakeKms(b""), line)
    assert result["error"] == "ValidationException"
    assert "\n" not in result["message"]


def test_roll_bounds() -> None:
    with pytest.raises(ValueError, match="count"):
        roll(FakeKms(b""), MAX_DICE + 1)
    with pytest.raises(ValueError, match="sides"):
        roll(FakeKms(b""), 1, sides=1)


def ask(cid: int, request: bytes) -> dict[str, Any]:
    """Send one request line to the dice enclave at ``cid`` as its parent; its JSON answer."""
    deadline = time.monotonic() + LISTEN_WAIT_S
    while True:
        try:
            conn = vsock.connect(cid, PORT, timeout=LISTEN_WAIT_S)
            break
        except enclave.EnclaveError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with conn, conn.makefile("rb") as answers:
        conn.sendall(request + b"\n")
        result: dict[str, Any] = json.loads(answers.readline())
        return result


def test_the_enclave_serves_rolls_to_its_own_image_only(
    built_enclave: Any, running_enclave: Any, kms_sim: Any
) -> None:
    image = built_enclave(PROJECT, docker_uri="dice:latest")
    if "DICE_PCR0" in os.environ:  # the pipeline's build (docs/ci.md) is the image tested here
        assert image.pcr0 == os.environ["DICE_PCR0"]
    kms_sim.set_policy(allow_only(image.pcr0))
    running = running_enclave(image)
    assert running.pcr0 == image.pcr0
    rolls = ask(running.cid, b"4d6")["rolls"]
    assert len(rolls) == 4
    assert all(1 <= r <= 6 for r in rolls)
    for record in kms_sim.audit():
        recipient = record["additionalEventData"]["recipient"]
        assert base64.b64decode(recipient["attestationDocumentEnclaveImageDigest"]).hex() == image.pcr0
    kms_sim.set_policy(allow_only(OTHER_IMAGE))
    assert ask(running.cid, b"1d6") == {"error": "AccessDeniedException"}
