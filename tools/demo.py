"""`make demo`: attested random bytes, end to end, with the real programs.

1. ``kms-sim`` starts with a policy that allows GenerateRandom only to an enclave whose PCR0 is ours.
2. ``vsock-proxy`` relays the parent's vsock port 8000 to it; ``nsm-sim`` is the enclave's NSM with that PCR0.
3. The demo enclave app (``python -m enclave.app``), a third process with ``NITRO_SIM_NSM`` set, asks for 32
   bytes: its SDK attests an RSA key, KMS verifies the document and answers CiphertextForRecipient, and only
   the enclave opens it. KMS's audit record shows what it verified.
4. The same call from an enclave with another PCR0 is refused with AccessDeniedException.

Everything runs in a fresh NITRO_SIM_HOME and on Unix sockets and 127.0.0.1; every process started here is
stopped before exit. Exit status 0 only if every step did what it should.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

BIN = Path(sys.executable).parent
PCR0_ALLOWED = hashlib.sha384(b"attested-random demo enclave image").digest()
PCR0_OTHER = hashlib.sha384(b"some other enclave image").digest()
PROXY_PORT = 8000
#: How long a program may take to say it is ready, and the app to finish (seconds).
READY_TIMEOUT = 30.0
APP_TIMEOUT = 60.0


class DemoError(Exception):
    """A step of the demo did not do what it should."""


class Stack:
    """The processes this demo started; all stopped on exit, whatever happens."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "NITRO_SIM_HOME": str(home)}
        self.procs: list[subprocess.Popen[str]] = []

    def start(
        self, argv: Sequence[str], *, ready: str, stream: str = "stdout"
    ) -> tuple[subprocess.Popen[str], str]:
        """Start ``argv`` and wait for a line containing ``ready`` on ``stream``; return that line."""
        proc = subprocess.Popen(
            list(argv),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        pipe = proc.stdout if stream == "stdout" else proc.stderr
        assert pipe is not None
        # A thread reads the lines: a selector on a buffered text pipe misses lines already buffered.
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(pipe, lines), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        seen: list[str] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line == "":
                break
            if ready in line:
                return proc, line.strip()
            seen.append(line.strip())
        proc.kill()
        proc.wait(timeout=5)
        raise DemoError(f"{Path(argv[0]).name} did not start: {seen[-1] if seen else 'no output'}")

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _pump(pipe: IO[str], lines: queue.Queue[str]) -> None:
    """Forward every line of ``pipe`` to ``lines``, then an empty string at end of file."""
    for line in pipe:
        lines.put(line)
    lines.put("")


@contextlib.contextmanager
def running(home: Path) -> Iterator[Stack]:
    stack = Stack(home)
    try:
        yield stack
    finally:
        stack.stop_all()


def enclave_app(stack: Stack, nsm_socket: Path, cid: int) -> dict[str, object]:
    """Run the demo enclave app as a simulated enclave (its own CID and NSM) and return its JSON answer."""
    env = {**stack.env, "NITRO_SIM_NSM": str(nsm_socket), "NITRO_SIM_CID": str(cid)}
    done = subprocess.run(
        [sys.executable, "-m", "enclave.app", "--bytes", "32", "--proxy-port", str(PROXY_PORT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=APP_TIMEOUT,
        check=False,
    )
    try:
        answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DemoError(f"the enclave app printed no answer: {done.stderr.strip()[-300:]}") from None
    return answer


def last_audit_record(home: Path) -> dict[str, object]:
    lines = (home / "kms" / "audit.jsonl").read_text().splitlines()
    record: dict[str, object] = json.loads(lines[-1])
    return record


def run(home: Path) -> None:
    policy = home / "demo-policy.json"
    policy.write_text(
        json.dumps(
            {
                "nitro-sim": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "kms:GenerateRandom",
                            "Resource": "*",
                            "Condition": {
                                "StringEqualsIgnoreCase": {
                                    "kms:RecipientAttestation:ImageSha384": PCR0_ALLOWED.hex()
                                }
                            },
                        }
                    ],
                }
            }
        )
    )
    with running(home) as stack:
        _, url = stack.start(
            [str(BIN / "kms-sim"), "serve", "--listen", "127.0.0.1:0", "--policy", str(policy)], ready="http"
        )
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        print(f"kms-sim     {url}  policy: GenerateRandom only for ImageSha384 = {PCR0_ALLOWED.hex()[:16]}…")
        allowlist = home / "vsock-proxy.yaml"
        allowlist.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {port}}}\n")
        stack.start(
            [str(BIN / "vsock-proxy"), str(PROXY_PORT), "127.0.0.1", str(port), "--config", str(allowlist)],
            ready="listening state",
            stream="stderr",
        )
        print(f"vsock-proxy vsock (3, {PROXY_PORT}) → 127.0.0.1:{port}, allowlist checked")
        sockets = {}
        for name, pcr0 in (("allowed", PCR0_ALLOWED), ("other", PCR0_OTHER)):
            sockets[name] = home / f"nsm-{name}.sock"
            stack.start(
                [str(BIN / "nsm-sim"), "--socket", str(sockets[name]), "--pcr", f"0={pcr0.hex()}"],
                ready="listening",
            )
        print("nsm-sim     two simulated enclaves' NSMs: PCR0 allowed / PCR0 other")

        answer = enclave_app(stack, sockets["allowed"], cid=16)
        if "error" in answer:
            raise DemoError(f"the allowed enclave was refused: {answer['error']}: {answer['message']}")
        if answer.get("bytes") != 32:
            raise DemoError(f"expected 32 bytes, got {answer.get('bytes')}")
        print(f"\nenclave 16  got {answer['bytes']} attested random bytes: {answer['plaintext_b64']}")
        audit = last_audit_record(home)
        recipient = audit.get("additionalEventData", {})
        recipient = recipient.get("recipient", {}) if isinstance(recipient, dict) else {}
        if audit.get("eventName") != "GenerateRandom" or not recipient:
            raise DemoError("KMS's audit log has no attested GenerateRandom record")
        if recipient.get("attestationDocumentEnclaveImageDigest") != PCR0_ALLOWED.hex():
            raise DemoError("KMS recorded another PCR0 than the enclave's")
        if "Plaintext" in json.dumps(audit) or str(answer["plaintext_b64"]) in json.dumps(audit):
            raise DemoError("the audit record mentions the plaintext")
        print(f"  KMS verified the document of {recipient.get('attestationDocumentModuleId')}")
        print(
            f"    PCR0 {str(recipient.get('attestationDocumentEnclaveImageDigest'))[:32]}… matches the policy"
        )
        print(
            f"    encrypted to RSA key sha256:{str(answer['recipient_key_sha256'])[:32]}… (the enclave's own)"
        )
        print("  KMS answered CiphertextForRecipient (the SDK accepts nothing else); opened in the enclave")

        refused = enclave_app(stack, sockets["other"], cid=17)
        if refused.get("error") != "AccessDeniedException":
            raise DemoError(f"an enclave with another PCR0 was not refused: {refused}")
        print(f"\nenclave 17  (other PCR0) refused: {refused['error']}")


def main() -> int:
    # A short path: Unix socket paths must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="nsim-", dir="/tmp") as tmp:
        try:
            run(Path(tmp))
        except (DemoError, OSError, subprocess.SubprocessError) as exc:
            print(f"\ndemo FAILED: {exc}", file=sys.stderr)
            return 1
    print("\ndemo OK: attested random bytes reached only the attested enclave")
    return 0


if __name__ == "__main__":
    sys.exit(main())
