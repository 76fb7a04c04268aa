"""Issue 15's "Done when": an enclave decrypts a secret the host encrypted, only when the key policy names its
image, and the host never sees the plaintext.

- The enclave app is the provider image built from ``Dockerfile.enclave`` by our ``nitro-cli
  build-enclave`` and run by ``nitro-cli run-enclave`` (the plugin's ``built_enclave`` /
  ``running_enclave``), beside the real kms-sim and vsock-proxy.
- The host makes a KMS key, puts its key policy (Decrypt only when ``kms:RecipientAttestation:ImageSha384``
  is the image's PCR0) and encrypts a secret, all with the AWS CLI against kms-sim, with the profile of
  ``$NITRO_SIM_HOME/kms/credentials``.
- ``attested-random check-secret`` (a process) has the enclave decrypt the blob with an attested Decrypt;
  the verified answer is SHA-384 of the secret, bound as the document's user_data.
- The same request to an image with one byte changed (another PCR0) is AccessDeniedException.
- What the host sees: every byte between the enclave and the vsock-proxy passes a recording relay (the
  proxy's socket is moved aside for the test and put back); KMS's answers there carry no Plaintext and no
  trace of the secret, nor does the audit log, nor the enclave's answer.
- The same running enclave makes data keys (the provider's ``data_key`` request, an attested
  GenerateDataKey): ``attested-random data-key`` as a process, PCR0 from the image file, prints a 32-byte
  key whose CiphertextBlob boto3 decrypts against kms-sim, with the same EncryptionContext, to the same
  bytes (another context: InvalidCiphertextException); with another image's PCR0 it refuses. The same
  request made here step by step checks each part of the answer: the document's chain to the simulated
  root, PCR0, our nonce, user_data = SHA-384 of the CBOR array of the three parts, the key opened with our
  RSA key. The data key never crosses the relay in any form.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from recording_relay import RecordingRelay

from attestation.cli import load_roots
from attestation.cms import decrypt_ciphertext_for_recipient
from attestation.provider_wire import DEFAULT_PORT, DataKeyAnswer, DataKeyRequest, data_key_payload
from attestation.verify import Verifier
from host._provider_client import NONCE_BYTES, RSA_KEY_BITS, connect, exchange
from nitro_sim.enclaves import Enclave, Image, copy_build_context
from nitro_sim.stack import KmsSim, VsockProxy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
#: Bound on one CLI run and on waiting for the enclave's app (never asserted as a time).
RUN_TIMEOUT = 120.0
WAIT_S = "60"
PRINCIPAL = "arn:aws:iam::111122223333:user/nitro-sim"
#: The data key asked for: AES_256, 32 bytes (GenerateDataKey's KeySpec).
DATA_KEY_BYTES = 32
#: The EncryptionContext the data keys are made and decrypted with.
CONTEXT = {"purpose": "issue-15", "app": "attested-random"}


@pytest.fixture
def relay(vsock_proxy: VsockProxy) -> Iterator[RecordingRelay]:
    recorder = RecordingRelay.in_front_of(vsock_proxy.socket)
    try:
        yield recorder
    finally:
        recorder.close()


def _aws(kms_sim: KmsSim, *args: str) -> str:
    """The AWS CLI of the venv against kms-sim, with the home's credentials; its stdout."""
    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or "aws"
    env = dict(os.environ) | kms_sim.credentials.environ | {"AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [aws, "--endpoint-url", kms_sim.url, "kms", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _key_policy(pcr0: str) -> str:
    admin = {
        "Sid": "HostManagesAndEncrypts",
        "Effect": "Allow",
        "Principal": {"AWS": PRINCIPAL},
        "Action": ["kms:Encrypt", "kms:PutKeyPolicy", "kms:GetKeyPolicy", "kms:DescribeKey"],
        "Resource": "*",
    }
    enclave = {
        "Sid": "OnlyThisImageDecrypts",
        "Effect": "Allow",
        "Principal": {"AWS": PRINCIPAL},
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [admin, enclave]})


def _check_secret(enclave: Enclave, pcr0: str, blob: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "host.random_client", "check-secret", "--enclave-cid", str(enclave.cid)]
    argv += ["--pcr0", pcr0, "--ciphertext-blob", blob, "--wait", WAIT_S, "--json", *extra]
    return subprocess.run(
        argv, env=dict(os.environ), capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )


def _data_key_cli(enclave: Enclave, key_id: str, *expected: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "host.random_client", "data-key", "--enclave-cid", str(enclave.cid)]
    argv += ["--key-id", key_id, "--key-spec", "AES_256", *expected, "--wait", WAIT_S, "--json"]
    for name, value in CONTEXT.items():
        argv += ["--encryption-context", f"{name}={value}"]
    return subprocess.run(
        argv, env=dict(os.environ), capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )


def _data_key_step_by_step(enclave: Enclave, image: Image, key_arn: str, boto: Any) -> bytes:
    """One data key request made and checked here part by part; the opened key."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    public_key = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    request = DataKeyRequest(
        key_id=key_arn,
        key_spec="AES_256",
        encryption_context=CONTEXT,
        nonce=secrets.token_bytes(NONCE_BYTES),
        public_key=public_key,
    )
    with connect(enclave.cid, DEFAULT_PORT, timeout=RUN_TIMEOUT, wait=float(WAIT_S)) as sock:
        answer = exchange(sock, request, timeout=RUN_TIMEOUT)
    assert isinstance(answer, DataKeyAnswer), answer
    doc = Verifier(roots=load_roots(["sim"]), chain_cache=False).verify(answer.document, at=datetime.now(UTC))
    assert doc.pcrs[0].hex() == image.pcr0
    assert doc.nonce == request.nonce
    bound = data_key_payload(answer.ciphertext, answer.ciphertext_blob, answer.key_arn)
    assert doc.user_data == hashlib.sha384(bound).digest()
    assert answer.key_arn == key_arn
    plaintext = decrypt_ciphertext_for_recipient(answer.ciphertext, private_key)
    assert len(plaintext) == DATA_KEY_BYTES
    opened = boto.decrypt(CiphertextBlob=answer.ciphertext_blob, EncryptionContext=CONTEXT)
    assert (opened["Plaintext"], opened["KeyId"]) == (plaintext, key_arn)
    return plaintext


def _one_byte_changed(context: Path) -> Path:
    """The same build context with one byte of the app changed ("The" -> "the" in a docstring)."""
    provider = context / "enclave" / "provider.py"
    text = provider.read_bytes()
    assert text.startswith(b'"""The ')
    provider.write_bytes(b'"""the ' + text[len(b'"""The ') :])
    return context


def test_only_the_named_image_decrypts_and_the_host_sees_no_plaintext(
    built_enclave: Any,
    running_enclave: Any,
    kms_sim: KmsSim,
    relay: RecordingRelay,
    tmp_path: Path,
) -> None:
    image: Image = built_enclave(copy_build_context(REPO, tmp_path / "ctx"))
    other: Image = built_enclave(_one_byte_changed(copy_build_context(REPO, tmp_path / "other")))
    assert other.pcr0 != image.pcr0

    # The host: a key, its policy naming the image, a secret encrypted with the AWS CLI.
    key_id = json.loads(_aws(kms_sim, "create-key", "--description", "issue 15 secret"))["KeyMetadata"][
        "KeyId"
    ]
    (tmp_path / "policy.json").write_text(_key_policy(image.pcr0))
    _aws(
        kms_sim,
        "put-key-policy",
        "--key-id",
        key_id,
        "--policy-name",
        "default",
        "--policy",
        f"file://{tmp_path / 'policy.json'}",
    )
    secret = secrets.token_bytes(32)
    (tmp_path / "secret.bin").write_bytes(secret)
    blob = _aws(
        kms_sim,
        "encrypt",
        "--key-id",
        key_id,
        "--plaintext",
        f"fileb://{tmp_path / 'secret.bin'}",
        "--query",
        "CiphertextBlob",
        "--output",
        "text",
    ).strip()
    (tmp_path / "secret.bin").unlink()

    # The named image decrypts it; the answer, verified, is the secret's SHA-384 and nothing else.
    enclave: Enclave = running_enclave(image)
    expected = hashlib.sha384(secret).hexdigest()
    done = _check_secret(enclave, image.pcr0, blob, "--expect-sha384", expected)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["sha384"] == expected
    assert set(answer) == {"sha384", "module_id"}

    # Another image (one byte changed) asks the same: KMS refuses it by the key policy.
    intruder: Enclave = running_enclave(other)
    refused = _check_secret(intruder, other.pcr0, blob)
    assert refused.returncode == 1
    assert "provider error AccessDeniedException" in refused.stderr
    assert "Traceback" not in refused.stderr

    # What the host saw: KMS's answers carry no Plaintext, and no form of the secret is anywhere.
    with relay.lock:
        seen = bytes(relay.captured)
    assert b"TrentService.Decrypt" in seen
    assert b"CiphertextForRecipient" in seen
    assert b'"Plaintext":"' not in seen.replace(b" ", b"")
    audit = json.dumps(kms_sim.audit()).encode()
    decrypts = [r for r in kms_sim.audit() if r["eventName"] == "Decrypt"]
    assert [r.get("errorCode") for r in decrypts] == [None, "AccessDeniedException"]
    for where in (seen, audit, done.stdout.encode(), done.stderr.encode()):
        assert secret not in where
        assert base64.b64encode(secret) not in where
        assert secret.hex().encode() not in where

    # The same enclave makes data keys under another key (its default policy: the account may use it).
    boto = kms_sim.boto3_client()
    key_arn = boto.create_key(Description="issue 15 data keys")["KeyMetadata"]["Arn"]
    made = _data_key_cli(enclave, key_arn, "--eif-path", str(image.eif))
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    assert set(answer) == {"Plaintext", "CiphertextBlob", "KeyId", "module_id"}
    assert answer["KeyId"] == key_arn
    data_key = base64.b64decode(answer["Plaintext"], validate=True)
    assert len(data_key) == DATA_KEY_BYTES
    blob = base64.b64decode(answer["CiphertextBlob"], validate=True)
    assert boto.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"] == data_key
    with pytest.raises(botocore.exceptions.ClientError) as wrong_context:
        boto.decrypt(CiphertextBlob=blob, EncryptionContext={"purpose": "another"})
    assert wrong_context.value.response["Error"]["Code"] == "InvalidCiphertextException"

    # Expecting another image's PCR0, the CLI refuses the same enclave's answer.
    refused = _data_key_cli(enclave, key_arn, "--pcr0", other.pcr0)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("attested-random: refused: PCR0 check failed")
    assert len(refused.stderr.splitlines()) == 1

    # Part by part: chain, PCR0, nonce, user_data binding, the key opened with our RSA key, boto3 agrees.
    stepwise = _data_key_step_by_step(enclave, image, key_arn, boto)
    assert stepwise != data_key  # a new key for each request

    # No data key crossed the relay (the enclave's side of the host) in any form.
    with relay.lock:
        seen = bytes(relay.captured)
    assert b"TrentService.GenerateDataKey" in seen
    for key in (data_key, stepwise):
        for form in (key, base64.b64encode(key), key.hex().encode()):
            assert form not in seen
            assert form not in made.stderr.encode()
