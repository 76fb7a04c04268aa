"""`make demo`: image -> measurement -> KMS policy on that measurement -> attested random bytes, secrets and
data keys.

1. ``nitro-cli build-enclave`` builds the attested random provider from ``Dockerfile.enclave``: an EIF and its
   PCR0, the measurement of that image.
2. ``kms-sim`` starts with an identity policy that allows GenerateRandom only to an enclave whose PCR0 is that
   one (and lets the operator create keys); ``vsock-proxy`` relays the parent's vsock port 8000 to it.
3. ``nitro-cli run-enclave`` runs the image; its app (``enclave.provider``) attests itself to KMS and serves
   attested random bytes, secret digests and data keys on vsock port 5005.
4. ``attested-random fetch`` (the parent's client) asks for 32 bytes with a fresh nonce and verifies the
   enclave's document: pinned root, the image's PCR0 as ``describe-eif`` gives it, the nonce, the digest.
5. The operator, with the AWS CLI and the home's profile, creates a KMS key and puts its key policy: the
   operator may Encrypt and administer it; only a Recipient whose ImageSha384 is that PCR0 may Decrypt and
   GenerateDataKey. It encrypts a random secret; its own ``aws kms decrypt`` of the blob is refused.
6. ``attested-random check-secret`` has the enclave open the blob with an attested Decrypt; the enclave
   answers only the secret's SHA-384 (its document's user_data), which equals the secret's.
7. ``attested-random data-key`` has the enclave make a data key under that key (an attested
   GenerateDataKey), sent to the caller only CMS-encrypted to the caller's RSA key, with its CiphertextBlob.
   The operator cannot decrypt that blob (the policy), so the enclave checks it: ``check-secret`` on the
   blob answers the SHA-384 of the key the caller received. Proved: the blob holds that key, and only the
   measured image can open it.
8. The same image with one changed byte has another PCR0: KMS refuses it the random bytes and the secret
   (AccessDeniedException).

Everything runs in a fresh NITRO_SIM_HOME, on Unix sockets and 127.0.0.1, started and stopped through
:mod:`nitro_sim` (the module the fixtures, the integration tests and the benchmark use); every process and
enclave started here is stopped before exit. No secret or key is printed, and KMS's audit log is checked to
hold none. Exit status 0 only if every step did what it should.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kms.state import ACCOUNT_ID, DEFAULT_PROFILE, DEFAULT_REGION
from nitro_sim.enclaves import Enclave, Image, build_image, copy_build_context, run_enclave, terminate_enclave
from nitro_sim.procs import ProcessError, ProcessGroup, run
from nitro_sim.stack import KmsSim, VsockProxy, child_environment, image_policy, program

REPO = Path(__file__).resolve().parents[1]
#: The file whose one byte the tampered image changes (a byte of a comment: the app still runs).
TAMPERED_FILE = Path("enclave") / "provider.py"
#: The operator's secret: 32 random bytes (Encrypt takes 1 to 4096 bytes of Plaintext, botocore's KMS model).
SECRET_BYTES = 32
#: The data key asked for: AES_256, 32 bytes (GenerateDataKey's KeySpec).
DATA_KEY_SPEC = "AES_256"
DATA_KEY_BYTES = 32
#: The EncryptionContext the data key is made and checked with (any pairs; Decrypt needs the same ones).
DATA_KEY_CONTEXT = {"app": "attested-random-demo"}
#: The IAM user of the home's ``nitro-sim`` profile: both the operator's AWS CLI and the enclave's SDK sign
#: as it, so the key policy tells them apart by the attestation alone.
PRINCIPAL = f"arn:aws:iam::{ACCOUNT_ID}:user/{DEFAULT_PROFILE}"


class DemoError(Exception):
    """A step of the demo did not do what it should."""


class Stack:
    """The processes and enclaves this demo started (through :mod:`nitro_sim`); all stopped on exit."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = child_environment(home)
        self.group = ProcessGroup(home / "logs", env=self.env)
        self.enclaves: list[Enclave] = []

    def run_enclave(self, eif: Path, cid: int) -> Enclave:
        enclave = run_enclave(eif, env=self.env, cid=cid)
        self.enclaves.append(enclave)
        return enclave

    def stop_all(self) -> None:
        try:
            for enclave in reversed(self.enclaves):
                terminate_enclave(enclave, env=self.env)
        finally:
            self.group.stop_all()


@contextlib.contextmanager
def running(home: Path) -> Iterator[Stack]:
    stack = Stack(home)
    try:
        yield stack
    finally:
        stack.stop_all()


def copy_context(dest: Path, *, tamper: bool = False) -> Path:
    """A copy of the image's build context; with ``tamper``, one byte of a comment changed."""
    copy_build_context(REPO, dest)  # what build-enclave of the project may read
    if tamper:
        target = dest / TAMPERED_FILE
        data = target.read_bytes()
        at = data.index(b"attested random bytes")  # inside the module docstring
        target.write_bytes(data[:at] + b"A" + data[at + 1 :])
    return dest


def build(stack: Stack, context: Path, eif: Path) -> Image:
    return build_image(context, eif, env=stack.env, docker_uri="attested-random:latest")


def fetch(stack: Stack, cid: int, eif: Path) -> subprocess.CompletedProcess[str]:
    argv = [*program("attested-random"), "fetch", "--enclave-cid", str(cid), "--eif-path", str(eif)]
    return run([*argv, "--bytes", "32", "--json"], name="attested-random fetch", env=stack.env, check=False)


def demo_policy(pcr0: str) -> dict[str, object]:
    """kms-sim's identity policy: GenerateRandom only for ``pcr0``'s image; the operator may create a key
    and replace its default key policy (which defers to this one)."""
    policy = image_policy(pcr0)
    operator = {"Effect": "Allow", "Action": ["kms:CreateKey", "kms:PutKeyPolicy"], "Resource": "*"}
    policy[DEFAULT_PROFILE]["Statement"].append(operator)
    return policy


def key_policy(pcr0: str) -> str:
    """The key's policy: the operator encrypts and administers; only ``pcr0``'s image decrypts and makes
    data keys (a request without a Recipient has no ImageSha384, so the condition fails for it)."""
    operator = {
        "Sid": "OperatorEncryptsAndAdministers",
        "Effect": "Allow",
        "Principal": {"AWS": PRINCIPAL},
        "Action": ["kms:Encrypt", "kms:PutKeyPolicy", "kms:GetKeyPolicy", "kms:DescribeKey"],
        "Resource": "*",
    }
    image = {
        "Sid": "OnlyTheMeasuredImageDecrypts",
        "Effect": "Allow",
        "Principal": {"AWS": PRINCIPAL},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [operator, image]})


def aws_kms(stack: Stack, kms: KmsSim, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The venv's AWS CLI against kms-sim with the home's profile (as ``kms-sim env`` exports it)."""
    env = stack.env | kms.credentials.environ | {"AWS_DEFAULT_REGION": DEFAULT_REGION}
    argv = [*program("aws"), "--endpoint-url", kms.url, "--output", "json", "kms", *args]
    return run(argv, name=f"aws kms {args[0]}", env=env, check=check)


def check_secret(
    stack: Stack, cid: int, eif: Path, blob: str, context: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [*program("attested-random"), "check-secret", "--enclave-cid", str(cid), "--eif-path", str(eif)]
    argv += ["--ciphertext-blob", blob, "--json"]
    for name, value in (context or {}).items():
        argv += ["--encryption-context", f"{name}={value}"]
    return run(argv, name="attested-random check-secret", env=stack.env, check=False)


def data_key(stack: Stack, cid: int, eif: Path, key_id: str) -> subprocess.CompletedProcess[str]:
    argv = [*program("attested-random"), "data-key", "--enclave-cid", str(cid), "--eif-path", str(eif)]
    argv += ["--key-id", key_id, "--key-spec", DATA_KEY_SPEC, "--json"]
    for name, value in DATA_KEY_CONTEXT.items():
        argv += ["--encryption-context", f"{name}={value}"]
    return run(argv, name="attested-random data-key", env=stack.env, check=False)


def refused_by_kms(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode != 0 and "AccessDeniedException" in done.stderr


def secret_and_data_key(stack: Stack, kms: KmsSim, image: Image, eif: Path) -> tuple[str, list[bytes]]:
    """Steps 5 to 7 (module docstring) with the enclave at CID 16; the secret's blob and what must stay
    secret (the secret, the data key)."""
    made = json.loads(aws_kms(stack, kms, "create-key", "--description", "attested-random demo").stdout)
    key_id = str(made["KeyMetadata"]["KeyId"])
    policy = stack.home / "key-policy.json"
    policy.write_text(key_policy(image.pcr0))
    put = ["put-key-policy", "--key-id", key_id, "--policy-name", "default", "--policy", f"file://{policy}"]
    aws_kms(stack, kms, *put)
    print(f"\naws kms     create-key {key_id}, put-key-policy: the operator may Encrypt;")
    print(f"              only ImageSha384 = PCR0 of {eif.name} may Decrypt and GenerateDataKey")

    secret = secrets.token_bytes(SECRET_BYTES)
    plain = stack.home / "secret.bin"
    plain.write_bytes(secret)
    try:
        sealed = aws_kms(stack, kms, "encrypt", "--key-id", key_id, "--plaintext", f"fileb://{plain}")
    finally:
        plain.unlink()
    blob = str(json.loads(sealed.stdout)["CiphertextBlob"])
    sealed_file = stack.home / "secret.enc"  # the CLI takes a blob as bytes from a file (fileb://)
    sealed_file.write_bytes(base64.b64decode(blob, validate=True))
    denied = aws_kms(stack, kms, "decrypt", "--ciphertext-blob", f"fileb://{sealed_file}", check=False)
    if not refused_by_kms(denied):
        raise DemoError(f"the operator's own Decrypt was not refused: {denied.stderr.strip()}")
    print(f"aws kms     encrypt: a {SECRET_BYTES}-byte secret; the operator's own decrypt: refused by KMS")

    opened = check_secret(stack, 16, eif, blob)
    if opened.returncode != 0:
        raise DemoError(f"the enclave could not open the secret: {opened.stderr.strip()}")
    answer = json.loads(opened.stdout)
    digest = hashlib.sha384(secret).hexdigest()
    if set(answer) != {"sha384", "module_id"} or answer["sha384"] != digest:
        raise DemoError("the enclave's answer is not the secret's SHA-384 alone")
    print("\nattested-random check-secret: the enclave opened it (attested Decrypt), answered only its")
    print(f"  SHA-384 {digest[:32]}… = the secret's, as its document's user_data")

    given = data_key(stack, 16, eif, key_id)
    if given.returncode != 0:
        raise DemoError(f"the enclave made no data key: {given.stderr.strip()}")
    keys = json.loads(given.stdout)
    key = base64.b64decode(keys["Plaintext"], validate=True)
    if len(key) != DATA_KEY_BYTES or not str(keys["KeyId"]).endswith(key_id):
        raise DemoError("the data key is not a 32-byte key under the demo's key")
    size = f"{DATA_KEY_BYTES}-byte {DATA_KEY_SPEC}"
    print(f"attested-random data-key: a {size} key, sent to us only CMS-encrypted to our RSA key")
    checked = check_secret(stack, 16, eif, str(keys["CiphertextBlob"]), DATA_KEY_CONTEXT)
    if checked.returncode != 0 or json.loads(checked.stdout)["sha384"] != hashlib.sha384(key).hexdigest():
        raise DemoError(f"the data key's CiphertextBlob does not hold our key: {checked.stderr.strip()}")
    print("  check-secret on its CiphertextBlob: SHA-384 = our key's: the blob holds the key we got")
    return blob, [secret, key]


def run_demo(home: Path) -> None:
    with running(home) as stack:
        eif = home / "provider.eif"
        image = build(stack, copy_context(home / "ctx"), eif)
        pcrs = image.measurements
        print(f"nitro-cli   build-enclave Dockerfile.enclave -> {eif.name}")
        for name in ("PCR0", "PCR1", "PCR2"):
            print(f"              {name} {pcrs[name][:32]}…")

        policy = home / "demo-policy.json"
        policy.write_text(json.dumps(demo_policy(image.pcr0)))
        kms = KmsSim.spawn(stack.group, home, policy=policy).wait_ready()
        print(
            f"kms-sim     {kms.url}  policy: GenerateRandom only for ImageSha384 = PCR0 of {eif.name};"
            " the operator may create keys"
        )
        proxy = VsockProxy.spawn(stack.group, home, kms).wait_ready()
        print(f"vsock-proxy vsock (3, {proxy.port}) -> 127.0.0.1:{kms.port}, allowlist checked")

        enclave = stack.run_enclave(eif, cid=16)
        print(f"nitro-cli   run-enclave: {enclave.enclave_id} (CID {enclave.cid})")
        done = fetch(stack, 16, eif)
        if done.returncode != 0:
            raise DemoError(f"fetching from the enclave failed: {done.stderr.strip()}")
        answer = json.loads(done.stdout)
        verified = answer["verified"]
        print(f"\nattested-random fetch: {answer['bytes']} attested random bytes: {answer['random_b64']}")
        root = str(verified["root"]).split(" (")[0]
        print(f"  document of {verified['module_id']}, chained to the pinned root {root}")
        print(f"  PCR0 {str(verified['pcr0'])[:32]}… equals the image's (describe-eif)")
        print("  nonce is ours; user_data is the SHA-384 of the bytes received")

        blob, kept = secret_and_data_key(stack, kms, image, eif)
        audit = (home / "kms" / "audit.jsonl").read_text()
        if answer["random_b64"] in audit or answer["random_hex"] in audit:
            raise DemoError("KMS's audit log mentions the plaintext")
        if any(base64.b64encode(k).decode() in audit or k.hex() in audit for k in kept):
            raise DemoError("KMS's audit log mentions the secret or the data key")

        tampered = home / "tampered.eif"
        other = build(stack, copy_context(home / "ctx-tampered", tamper=True), tampered).measurements
        if other["PCR0"] == pcrs["PCR0"] or other["PCR1"] != pcrs["PCR1"]:
            raise DemoError("one changed byte should move PCR0 (and PCR2) but not PCR1")
        print(f"\nnitro-cli   the same image with one changed byte in {TAMPERED_FILE}:")
        print(f"              PCR0 {other['PCR0'][:32]}… (PCR1 unchanged)")
        stack.run_enclave(tampered, cid=17)
        refused = fetch(stack, 17, tampered)
        if refused.returncode == 0 or "AccessDeniedException" not in refused.stderr:
            raise DemoError(f"the tampered image was not refused by KMS: {refused.stderr.strip()}")
        print("attested-random fetch from it: refused by KMS: AccessDeniedException")
        refused = check_secret(stack, 17, tampered, blob)
        if not refused_by_kms(refused):
            raise DemoError(f"the tampered image was not refused the secret: {refused.stderr.strip()}")
        print("attested-random check-secret from it: refused by KMS: AccessDeniedException")


def main() -> int:
    # A short path: Unix socket paths must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="nsim-", dir="/tmp") as tmp:
        try:
            run_demo(Path(tmp))
        except (DemoError, ProcessError, OSError, ValueError, KeyError) as exc:
            print(f"\ndemo FAILED: {exc}", file=sys.stderr)
            return 1
    print("\ndemo OK: attested random bytes, the secret and the data key reached only the measured image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
