"""The corpus of bad attestation documents (tests/attestation/corpus/) sent to one real kms-sim process
through boto3: GenerateRandom with each file as its Recipient is refused with the manifest's error (a
ValidationException's message naming what the verifier found, the same detail `nitro-attest verify` prints),
every refusal is in the audit log, and the server still answers the control document after the whole corpus.

The server is kms-sim as installed, with ``--attestation-time`` at the corpus's time (the documents are
signed for that fixed time; SigV4 and the rest stay on the real clock); its key policy allows
GenerateRandom only for the corpus image's PCR0 (``kms:RecipientAttestation:ImageSha384``),
as the manifest says.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from attestation.cms import decrypt_ciphertext_for_recipient
from nitro_sim.procs import ProcessGroup
from nitro_sim.stack import KmsSim, child_environment, image_policy, program

CORPUS = Path(__file__).resolve().parents[1] / "attestation" / "corpus"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
BAD: list[dict[str, str]] = MANIFEST["bad"]
RECIPIENT = "RSAES_OAEP_SHA_256"


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsSim]:
    """One kms-sim for the whole corpus."""
    home = tmp_path_factory.mktemp("kms-corpus")
    policy = home / "corpus-policy.json"
    policy.write_text(json.dumps(image_policy(MANIFEST["expected_pcr0"])), encoding="utf-8")
    env = child_environment(home)
    argv = [*program("kms-sim"), "serve", "--listen", "127.0.0.1:0", "--reload-interval", "0"]
    argv += ["--attestation-time", MANIFEST["at"]]
    argv += ["--trust-root", str(CORPUS / MANIFEST["root"]), "--policy", str(policy)]
    argv += ["--max-doc-age", str(MANIFEST["max_age_s"])]
    with ProcessGroup(home / "logs", env=env) as group:
        yield KmsSim(group.spawn(argv, name="kms-sim"), home, policy=policy).wait_ready()


@pytest.fixture(scope="module")
def client(kms: KmsSim) -> Any:
    return kms.boto3_client(config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def _generate_random(client: Any, document: bytes) -> Any:
    return client.generate_random(
        NumberOfBytes=32, Recipient={"KeyEncryptionAlgorithm": RECIPIENT, "AttestationDocument": document}
    )


def _recipient_key() -> Any:
    """The control document's RSA-2048 private key, regenerated from the corpus's seed."""
    if str(CORPUS) not in sys.path:  # the generator's modules import one another from there
        sys.path.insert(0, str(CORPUS))
    return importlib.import_module("corpus_material").rsa_key(2048)


def _answers_the_control(client: Any) -> None:
    answer = _generate_random(client, (CORPUS / MANIFEST["good"]).read_bytes())
    assert "Plaintext" not in answer
    plaintext = decrypt_ciphertext_for_recipient(answer["CiphertextForRecipient"], _recipient_key())
    assert len(plaintext) == 32


def test_kms_sim_answers_the_control_document(kms: KmsSim, client: Any) -> None:
    _answers_the_control(client)
    kms.mark_audit()


@pytest.mark.parametrize("entry", BAD, ids=lambda entry: Path(entry["file"]).stem)
def test_kms_sim_refuses_each_file_with_its_error(client: Any, entry: dict[str, str]) -> None:
    with pytest.raises(ClientError) as info:
        _generate_random(client, (CORPUS / entry["file"]).read_bytes())
    error = info.value.response["Error"]
    assert error["Code"] == entry["kms_error"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    if entry["kms_error"] == "ValidationException":
        assert error["Message"].startswith("Recipient.AttestationDocument "), error["Message"]
        assert entry["verify_detail"] in error["Message"]


def test_every_refusal_is_audited_and_the_server_still_serves(kms: KmsSim, client: Any) -> None:
    records = kms.audit()
    assert [r.get("errorCode") for r in records] == [entry["kms_error"] for entry in BAD]
    assert {r["eventName"] for r in records} == {"GenerateRandom"}
    assert kms.process.running()
    _answers_the_control(client)
