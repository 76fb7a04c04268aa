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

Everything runs in a fresh NITRO_SIM_HOME, on Unix sockets and 127.0.0.1; every process and enclave started
here is stopped before exit. Exit status 0 only if every step did what it should.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROXY_PORT = 8000
#: What Dockerfile.enclave reads from the project tree.
CONTEXT = ("Dockerfile.enclave", ".dockerignore", "attestation", "enclave")
#: The file whose one byte the tampered image changes (a byte of a comment: the app still runs).
TAMPERED_FILE = Path("enclave") / "provider.py"
#: How long a program may take to say it is ready, and a command to finish (seconds).
READY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0


class DemoError(Exception):
    """A step of the demo did not do what it should."""


class Stack:
    """The processes and enclaves this demo started; all stopped on exit, whatever happens."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("NITRO_", "AWS_"))}
        self.env["NITRO_SIM_HOME"] = str(home)
        self.procs: list[subprocess.Popen[str]] = []
        self.enclaves = False

    def start(self, argv: Sequence[str], *, ready: str, stream: str = "stdout") -> str:
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
                return line.strip()
            seen.append(line.strip())
        raise DemoError(f"{Path(argv[0]).name} did not start: {seen[-1] if seen else 'no output'}")

    def run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one command to its end; with ``check``, a non-zero exit is a DemoError with its last line."""
        if Path(argv[0]).name == "nitro-cli" and argv[1] == "run-enclave":
            self.enclaves = True
        done = subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
        if check and done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
            raise DemoError(f"{Path(argv[0]).name} {argv[1]} failed (exit {done.returncode}): {last}")
        return done

    def stop_all(self) -> None:
        if self.enclaves:
            self.run([str(BIN / "nitro-cli"), "terminate-enclave", "--all"], check=False)
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


def copy_context(dest: Path, *, tamper: bool = False) -> Path:
    """A copy of the image's build context; with ``tamper``, one byte of a comment changed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in CONTEXT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    if tamper:
        target = dest / TAMPERED_FILE
        data = target.read_bytes()
        at = data.index(b"attested random bytes")  # inside the module docstring
        target.write_bytes(data[:at] + b"A" + data[at + 1 :])
    return dest


def build(stack: Stack, context: Path, eif: Path) -> dict[str, str]:
    done = stack.run(
        [
            str(BIN / "nitro-cli"),
            "build-enclave",
            "--docker-dir",
            str(context),
            "--docker-uri",
            "attested-random:latest",
            "--output-file",
            str(eif),
        ]
    )
    measurements: dict[str, str] = json.loads(done.stdout)["Measurements"]
    return measurements


def run_enclave(stack: Stack, eif: Path, cid: int) -> dict[str, Any]:
    done = stack.run(
        [
            str(BIN / "nitro-cli"),
            "run-enclave",
            "--eif-path",
            str(eif),
            "--cpu-count",
            "2",
            "--memory",
            "512",
            "--enclave-cid",
            str(cid),
        ]
    )
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def fetch(stack: Stack, cid: int, eif: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "attested-random"), "fetch", "--enclave-cid", str(cid), "--eif-path", str(eif)]
    return stack.run([*argv, "--bytes", "32", "--json"], check=False)


def kms_policy(pcr0: str) -> dict[str, object]:
    allow = {
        "Effect": "Allow",
        "Action": "kms:GenerateRandom",
        "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0}},
    }
    return {"nitro-sim": {"Version": "2012-10-17", "Statement": [allow]}}


def run(home: Path) -> None:
    with running(home) as stack:
        eif = home / "provider.eif"
        pcrs = build(stack, copy_context(home / "ctx"), eif)
        print(f"nitro-cli   build-enclave Dockerfile.enclave -> {eif.name}")
        for name in ("PCR0", "PCR1", "PCR2"):
            print(f"              {name} {pcrs[name][:32]}…")

        policy = home / "demo-policy.json"
        policy.write_text(json.dumps(kms_policy(pcrs["PCR0"])))
        url = stack.start(
            [str(BIN / "kms-sim"), "serve", "--listen", "127.0.0.1:0", "--policy", str(policy)], ready="http"
        )
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        print(f"kms-sim     {url}  policy: GenerateRandom only for ImageSha384 = PCR0 of {eif.name}")
        allowlist = home / "vsock-proxy.yaml"
        allowlist.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {port}}}\n")
        stack.start(
            [str(BIN / "vsock-proxy"), str(PROXY_PORT), "127.0.0.1", str(port), "--config", str(allowlist)],
            ready="listening state",
            stream="stderr",
        )
        print(f"vsock-proxy vsock (3, {PROXY_PORT}) -> 127.0.0.1:{port}, allowlist checked")

        enclave = run_enclave(stack, eif, cid=16)
        print(f"nitro-cli   run-enclave: {enclave['EnclaveID']} (CID {enclave['EnclaveCID']})")
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
        other = build(stack, copy_context(home / "ctx-tampered", tamper=True), tampered)
        if other["PCR0"] == pcrs["PCR0"] or other["PCR1"] != pcrs["PCR1"]:
            raise DemoError("one changed byte should move PCR0 (and PCR2) but not PCR1")
        print(f"\nnitro-cli   the same image with one changed byte in {TAMPERED_FILE}:")
        print(f"              PCR0 {other['PCR0'][:32]}… (PCR1 unchanged)")
        run_enclave(stack, tampered, cid=17)
        refused = fetch(stack, 17, tampered)
        if refused.returncode == 0 or "AccessDeniedException" not in refused.stderr:
            raise DemoError(f"the tampered image was not refused by KMS: {refused.stderr.strip()}")
        print("attested-random fetch from it: refused by KMS: AccessDeniedException")


def main() -> int:
    # A short path: Unix socket paths must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="nsim-", dir="/tmp") as tmp:
        try:
            run(Path(tmp))
        except (DemoError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            print(f"\ndemo FAILED: {exc}", file=sys.stderr)
            return 1
    print("\ndemo OK: attested random bytes reached only the measured image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
