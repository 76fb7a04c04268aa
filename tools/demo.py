"""`make demo`: image -> measurement -> KMS policy on that measurement -> attested random bytes.

1. ``nitro-cli build-enclave`` builds the attested random provider from ``Dockerfile.enclave``: an EIF and its
   PCR0, the measurement of that image.
2. ``kms-sim`` starts with a policy that allows GenerateRandom only to an enclave whose PCR0 is that one;
   ``vsock-proxy`` relays the parent's vsock port 8000 to it.
3. ``nitro-cli run-enclave`` runs the image; its app (``enclave.provider``) attests itself to KMS and serves
   attested random bytes on vsock port 5005.
4. ``attested-random fetch`` (the parent's client) asks for 32 bytes with a fresh nonce and verifies the
   enclave's document: pinned root, the image's PCR0 as ``describe-eif`` gives it, the nonce, the digest.
5. The same image with one changed byte has another PCR0: KMS refuses it (AccessDeniedException).

Everything runs in a fresh NITRO_SIM_HOME, on Unix sockets and 127.0.0.1, started and stopped through
:mod:`nitro_sim` (the module the fixtures, the integration tests and the benchmark use); every process and
enclave started here is stopped before exit. Exit status 0 only if every step did what it should.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nitro_sim.enclaves import Enclave, Image, build_image, copy_build_context, run_enclave, terminate_enclave
from nitro_sim.procs import ProcessError, ProcessGroup, run
from nitro_sim.stack import KmsSim, VsockProxy, child_environment, image_policy, program

REPO = Path(__file__).resolve().parents[1]
#: The file whose one byte the tampered image changes (a byte of a comment: the app still runs).
TAMPERED_FILE = Path("enclave") / "provider.py"


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


def run_demo(home: Path) -> None:
    with running(home) as stack:
        eif = home / "provider.eif"
        image = build(stack, copy_context(home / "ctx"), eif)
        pcrs = image.measurements
        print(f"nitro-cli   build-enclave Dockerfile.enclave -> {eif.name}")
        for name in ("PCR0", "PCR1", "PCR2"):
            print(f"              {name} {pcrs[name][:32]}…")

        policy = home / "demo-policy.json"
        policy.write_text(json.dumps(image_policy(image.pcr0)))
        kms = KmsSim.spawn(stack.group, home, policy=policy).wait_ready()
        print(f"kms-sim     {kms.url}  policy: GenerateRandom only for ImageSha384 = PCR0 of {eif.name}")
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

        audit = (home / "kms" / "audit.jsonl").read_text()
        if answer["random_b64"] in audit or answer["random_hex"] in audit:
            raise DemoError("KMS's audit log mentions the plaintext")

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


def main() -> int:
    # A short path: Unix socket paths must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="nsim-", dir="/tmp") as tmp:
        try:
            run_demo(Path(tmp))
        except (DemoError, ProcessError, OSError, ValueError, KeyError) as exc:
            print(f"\ndemo FAILED: {exc}", file=sys.stderr)
            return 1
    print("\ndemo OK: attested random bytes reached only the measured image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
