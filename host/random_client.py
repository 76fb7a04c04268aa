"""``attested-random``: fetch random bytes, a data key or a secret's digest from an enclave's provider, and
verify where they come from.

    attested-random fetch --enclave-cid CID [--port P] [--bytes N] (--pcr0 HEX | --eif-path F.eif)
                          [--root sim|aws|PEM] [--encrypt] [--wait S] [--json]
    attested-random data-key --enclave-cid CID --key-id ID [--key-spec AES_256|AES_128]
                          [--encryption-context K=V ...] (--pcr0 HEX | --eif-path F.eif) [...]
    attested-random check-secret --enclave-cid CID --ciphertext-blob B64|fileb://PATH
                          [--encryption-context K=V ...] [--expect-sha384 HEX] (--pcr0 | --eif-path) [...]

``data-key`` has the enclave make an attested GenerateDataKey under the KMS key and send the data key
encrypted to an RSA-2048 key pair made for the one request (always: the plaintext key never crosses the
parent in the clear), with KMS's CiphertextBlob of it and the key's ARN; it prints the key (base64), the
blob (base64, to have it decrypted later) and the ARN. ``check-secret`` has the enclave decrypt a
CiphertextBlob (e.g. from ``aws kms encrypt``) with an attested Decrypt and answer only SHA-384 of the
plaintext, bound as the document's user_data; with ``--expect-sha384`` a different digest is refused
(exit 1). Both verify the answer with the same steps as ``fetch``, (5) on their payload's rule
(:mod:`attestation.provider_wire`).

The parent instance's side of :mod:`attestation.provider_wire` (the protocol, its bounds and the default
port 5005 are stated there). It connects to vsock ``(CID, P)``: in simulation (``attestation.sim``'s rule,
any ``NITRO_SIM_*`` set) the Unix socket :func:`attestation.sim.vsock_socket_path` names, otherwise a real
``AF_VSOCK`` socket. It sends a fresh random nonce of :data:`NONCE_BYTES` and, with ``--encrypt``, the
public half of an RSA-2048 key pair made for this one request, and accepts the answer only after every
step of :func:`verify_answer` holds:

    (1) the answer is of the kind asked for (ciphertext exactly when we sent a key)
    (2) the document is authentic: COSE ES384 signature and certificate chain to a pinned root, at the time
        the command started (attestation.verify.Verifier)
    (3) PCR0 equals the expected one: ``--pcr0``, or the image's PCR0 from ``--eif-path`` (attestation.eif)
    (4) the document's nonce is ours
    (5) its user_data is the SHA-384 of the payload exactly as received (attestation.provider_wire)
    (6) with ``--encrypt``: the CiphertextForRecipient opens with our key (attestation.cms)
    and the payload is exactly the number of bytes asked for.

An enclave whose app does not listen yet (``nitro-cli run-enclave`` returns once the enclave has booted,
before its app is ready) is tried again for up to ``--wait`` seconds (default 30).

Roots (``--root``, the rules of ``nitro-attest verify``): ``sim`` is the simulated root in
``$NITRO_SIM_HOME/pki/root.crt``, ``aws`` the AWS Nitro Enclaves Root-G1, anything else a PEM or DER file.
The default is ``sim`` in simulation and ``aws`` otherwise.

Output: the bytes (base64 and hex) and what was verified (module id, PCR0, timestamp, nonce, digest), or
with ``--json`` one JSON object. Exit status 0 when verified; 1 when refused (the line names the failed
check), when the provider answers an error (its name, e.g. ``AccessDeniedException``) or cannot be
reached; 2 for a usage error. Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.cli import UsageError as _RootError
from attestation.cli import load_roots  # nitro-attest verify's --root rules, shared
from attestation.document import AttestationDocument
from attestation.eif import MAX_EIF_BYTES, EifError, read_eif
from attestation.provider_wire import (
    DATA_KEY_SPECS,
    DEFAULT_PORT,
    MAX_CIPHERTEXT_BLOB_BYTES,
    MAX_RANDOM_BYTES,
    SHA384_BYTES,
)
from attestation.sim import MAX_VSOCK_U32, is_simulated
from attestation.verify import Verifier
from host._provider_client import (
    PCR_BYTES,
    RSA_KEY_BITS,
    DataKey,
    Fetched,
    ProviderError,
    RefusedError,
    SecretChecked,
    check_secret,
    data_key,
    fetch,
)

__all__ = [
    "DataKey",
    "Fetched",
    "ProviderError",
    "RefusedError",
    "SecretChecked",
    "check_secret",
    "data_key",
    "fetch",
    "main",
]

PROG = "attested-random"
#: Bytes asked for when ``--bytes`` is not given.
DEFAULT_BYTES = 32
#: How long ``fetch`` waits by default for an enclave's app to start listening, and the bound on ``--wait``.
DEFAULT_WAIT_SECONDS = 30.0
MAX_WAIT_SECONDS = 3600.0
#: Enclave CIDs: 0-2 are reserved, 3 is the parent, 0xFFFFFFFF is VMADDR_CID_ANY (nitro-cli's rule).
MIN_ENCLAVE_CID, MAX_ENCLAVE_CID = 4, MAX_VSOCK_U32 - 1
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command line or unreadable input: exit 2 with one line."""


# -- the command ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _int_in(text: str, what: str, low: int, high: int) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > len(str(high)) or not low <= int(text) <= high:
        raise UsageError(f"{what} must be an integer in {low}..{high}, got {text[:24]!r}")
    return int(text)


def _seconds(text: str, what: str, high: float) -> float:
    try:
        value = float(text.strip()) if text.strip().isascii() else math.nan
    except ValueError:
        value = math.nan
    if not 0 <= value <= high:  # NaN fails both comparisons
        raise UsageError(f"{what} must be a number of seconds in 0..{high:g}, got {text[:24]!r}")
    return value


def _expected_pcr0(args: argparse.Namespace) -> bytes:
    if args.pcr0 is not None:
        try:
            value = bytes.fromhex(args.pcr0)
        except ValueError:
            raise UsageError("--pcr0 must be hex") from None
        if len(value) != PCR_BYTES:
            raise UsageError(
                f"--pcr0 must be {PCR_BYTES} bytes ({2 * PCR_BYTES} hex digits), got {len(value)}"
            )
        return value
    path = Path(args.eif_path)
    try:
        if path.stat().st_size > MAX_EIF_BYTES:
            raise UsageError(f"--eif-path {path}: over the {MAX_EIF_BYTES}-byte bound of an EIF")
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--eif-path {path}: {exc.strerror or exc}") from None
    try:
        return read_eif(data).measurements.pcr0
    except EifError as exc:
        raise UsageError(f"--eif-path {path}: {exc}") from None


def _verifier(root: str | None) -> Verifier:
    try:
        return Verifier(roots=load_roots([root or ("sim" if is_simulated() else "aws")]), chain_cache=False)
    except _RootError as exc:
        raise UsageError(str(exc)) from None


def _issued(doc: AttestationDocument) -> str:
    try:
        return doc.issued_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):  # a timestamp past year 9999
        return "<past year 9999>"


def _report(fetched: Fetched, *, as_json: bool) -> str:
    doc = fetched.document
    root_fp = hashlib.sha256(fetched.root.public_bytes(serialization.Encoding.DER)).hexdigest()
    root = f"{fetched.root.subject.rfc4514_string()} (sha256 {root_fp[:16]}...)"
    if as_json:
        summary: dict[str, Any] = {
            "bytes": len(fetched.random),
            "random_b64": base64.b64encode(fetched.random).decode(),
            "random_hex": fetched.random.hex(),
            "encrypted": fetched.encrypted,
            "verified": {
                "module_id": doc.module_id,
                "pcr0": doc.pcrs[0].hex(),
                "timestamp": doc.timestamp,
                "issued_at": _issued(doc),
                "nonce_ok": True,
                "digest_ok": True,
                "root": root,
            },
        }
        return json.dumps(summary)
    delivery = f"encrypted to our RSA-{RSA_KEY_BITS} key, opened here" if fetched.encrypted else "plaintext"
    return "\n".join(
        (
            f"random     {base64.b64encode(fetched.random).decode()}",
            f"hex        {fetched.random.hex()}",
            f"verified   {len(fetched.random)} bytes ({delivery}) from enclave {doc.module_id}",
            f"  PCR0       {doc.pcrs[0].hex()} (as expected)",
            f"  timestamp  {doc.timestamp} ({_issued(doc)})",
            f"  nonce      ok ({len(doc.nonce or b'')} fresh bytes of ours)",
            "  user_data  ok (SHA-384 of the payload as received)",
            f"  chain      ES384 signature, chain to {root}",
        )
    )


def cmd_fetch(args: argparse.Namespace, *, now: datetime) -> int:
    cid = _int_in(args.enclave_cid, "--enclave-cid", MIN_ENCLAVE_CID, MAX_ENCLAVE_CID)
    port = _int_in(args.port, "--port", 1, MAX_VSOCK_U32)
    number_of_bytes = _int_in(args.bytes, "--bytes", 1, MAX_RANDOM_BYTES)
    pcr0 = _expected_pcr0(args)
    verifier = _verifier(args.root)
    wait = _seconds(args.wait, "--wait", MAX_WAIT_SECONDS)
    fetched = fetch(
        cid,
        port,
        number_of_bytes=number_of_bytes,
        pcr0=pcr0,
        verifier=verifier,
        at=now,
        encrypt=args.encrypt,
        wait=wait,
    )
    print(_report(fetched, as_json=args.json))
    return EXIT_OK


def _context(pairs: list[str] | None) -> dict[str, str] | None:
    """``--encryption-context K=V`` (repeatable) as a map; None when not given."""
    if not pairs:
        return None
    context: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"--encryption-context takes KEY=VALUE, got {pair[:24]!r}")
        if key in context:  # the last one winning would send a context the user did not write
            raise UsageError(f"--encryption-context names {key[:24]!r} twice")
        context[key] = value
    return context


def _read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``, never waiting: a device (/dev/zero) or a FIFO has no size to
    stat, and opening a FIFO nobody writes to would block (O_NONBLOCK: it reads as empty)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _blob(text: str) -> bytes:
    """``--ciphertext-blob``: base64, or ``fileb://PATH`` (the AWS CLI's form for raw bytes in a file)."""
    if text.startswith("fileb://"):
        path = Path(text.removeprefix("fileb://"))
        try:
            data = _read_bounded(path, MAX_CIPHERTEXT_BLOB_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"--ciphertext-blob {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_CIPHERTEXT_BLOB_BYTES:
            raise UsageError(f"--ciphertext-blob {path}: over {MAX_CIPHERTEXT_BLOB_BYTES} bytes")
        return data
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise UsageError("--ciphertext-blob must be base64 or fileb://PATH") from None


def _verified_lines(doc: AttestationDocument, root: x509.Certificate) -> list[str]:
    root_fp = hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()
    return [
        f"  PCR0       {doc.pcrs[0].hex()} (as expected)",
        f"  timestamp  {doc.timestamp} ({_issued(doc)})",
        f"  nonce      ok ({len(doc.nonce or b'')} fresh bytes of ours)",
        "  user_data  ok (binds the answer as received)",
        f"  chain      ES384 signature, chain to {root.subject.rfc4514_string()} (sha256 {root_fp[:16]}...)",
    ]


def _target(args: argparse.Namespace) -> tuple[int, int, bytes, Verifier, float]:
    cid = _int_in(args.enclave_cid, "--enclave-cid", MIN_ENCLAVE_CID, MAX_ENCLAVE_CID)
    port = _int_in(args.port, "--port", 1, MAX_VSOCK_U32)
    return (
        cid,
        port,
        _expected_pcr0(args),
        _verifier(args.root),
        _seconds(args.wait, "--wait", MAX_WAIT_SECONDS),
    )


def cmd_data_key(args: argparse.Namespace, *, now: datetime) -> int:
    if args.key_spec not in DATA_KEY_SPECS:
        raise UsageError(f"--key-spec must be one of {', '.join(DATA_KEY_SPECS)}")
    context = _context(args.encryption_context)
    cid, port, pcr0, verifier, wait = _target(args)
    try:
        key: DataKey = data_key(
            cid,
            port,
            key_id=args.key_id,
            key_spec=args.key_spec,
            encryption_context=context,
            pcr0=pcr0,
            verifier=verifier,
            at=now,
            wait=wait,
        )
    except ValueError as exc:  # a key id or context the protocol refuses
        raise UsageError(str(exc)) from None
    plaintext = base64.b64encode(key.plaintext).decode()
    blob = base64.b64encode(key.ciphertext_blob).decode()
    if args.json:
        print(
            json.dumps(
                {
                    "Plaintext": plaintext,
                    "CiphertextBlob": blob,
                    "KeyId": key.key_arn,
                    "module_id": key.document.module_id,
                }
            )
        )
        return EXIT_OK
    lines = [
        f"plaintext  {plaintext}",
        f"blob       {blob}",
        f"key        {key.key_arn}",
        f"verified   a {len(key.plaintext)}-byte data key (encrypted to our RSA-{RSA_KEY_BITS} key, opened "
        f"here) from enclave {key.document.module_id}",
        *_verified_lines(key.document, key.root),
    ]
    print("\n".join(lines))
    return EXIT_OK


def cmd_check_secret(args: argparse.Namespace, *, now: datetime) -> int:
    blob = _blob(args.ciphertext_blob)
    expected: bytes | None = None
    if args.expect_sha384 is not None:
        try:
            expected = bytes.fromhex(args.expect_sha384)
        except ValueError:
            raise UsageError("--expect-sha384 must be hex") from None
        if len(expected) != SHA384_BYTES:
            raise UsageError(f"--expect-sha384 must be {2 * SHA384_BYTES} hex digits")
    context = _context(args.encryption_context)
    cid, port, pcr0, verifier, wait = _target(args)
    try:
        checked: SecretChecked = check_secret(
            cid,
            port,
            ciphertext_blob=blob,
            encryption_context=context,
            pcr0=pcr0,
            verifier=verifier,
            at=now,
            wait=wait,
        )
    except ValueError as exc:  # a blob or context the protocol refuses
        raise UsageError(str(exc)) from None
    if expected is not None and not hmac.compare_digest(expected, checked.secret_sha384):
        raise RefusedError("secret", "the secret's SHA-384 is not the expected one")
    if args.json:
        print(json.dumps({"sha384": checked.secret_sha384.hex(), "module_id": checked.document.module_id}))
        return EXIT_OK
    lines = [
        f"sha384     {checked.secret_sha384.hex()}",
        f"verified   enclave {checked.document.module_id} decrypted the secret and answered only its digest"
        + (" (as expected)" if expected is not None else ""),
        *_verified_lines(checked.document, checked.root),
    ]
    print("\n".join(lines))
    return EXIT_OK


def _common_arguments(sub: argparse.ArgumentParser) -> None:
    """What every subcommand takes: where the provider is, what it must be, the root, the wait, --json."""
    sub.add_argument("--enclave-cid", required=True, metavar="CID", help="the enclave's CID")
    sub.add_argument("--port", default=str(DEFAULT_PORT), metavar="P", help=f"vsock port ({DEFAULT_PORT})")
    expected = sub.add_mutually_exclusive_group(required=True)
    expected.add_argument("--pcr0", metavar="HEX", help="the enclave image's expected PCR0 (96 hex digits)")
    expected.add_argument("--eif-path", metavar="F.eif", help="take the expected PCR0 from this image")
    sub.add_argument(
        "--root", metavar="sim|aws|PEM", help="pinned root (default: sim in simulation, else aws)"
    )
    sub.add_argument(
        "--wait",
        default=str(DEFAULT_WAIT_SECONDS),
        metavar="S",
        help=f"seconds to wait for the enclave's app to listen (default {DEFAULT_WAIT_SECONDS:g})",
    )
    sub.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Fetch attested random bytes, data keys or secret digests.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fetch_ = sub.add_parser("fetch", help="ask the enclave's provider for random bytes and verify the answer")
    _common_arguments(fetch_)
    fetch_.add_argument("--bytes", default=str(DEFAULT_BYTES), metavar="N", help=f"1..{MAX_RANDOM_BYTES}")
    fetch_.add_argument("--encrypt", action="store_true", help="have the bytes sent encrypted to a fresh key")
    key = sub.add_parser(
        "data-key", help="have the enclave make a data key under a KMS key, sent encrypted to us"
    )
    _common_arguments(key)
    key.add_argument("--key-id", required=True, metavar="ID", help="the KMS key (ID, ARN, alias name or ARN)")
    key.add_argument("--key-spec", default="AES_256", metavar="SPEC", help="AES_256 (default) or AES_128")
    key.add_argument("--encryption-context", action="append", metavar="K=V", help="encryption context pair")
    check = sub.add_parser(
        "check-secret", help="have the enclave decrypt a secret and answer only its SHA-384"
    )
    _common_arguments(check)
    check.add_argument("--ciphertext-blob", required=True, metavar="B64|fileb://PATH", help="KMS ciphertext")
    check.add_argument("--encryption-context", action="append", metavar="K=V", help="encryption context pair")
    check.add_argument("--expect-sha384", metavar="HEX", help="refuse unless the secret has this SHA-384")
    return parser


def _one_line(text: str) -> str:
    """``text`` safe for a terminal line: a provider's (untrusted) message may hold newlines or escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attested-random``; returns the exit status."""
    now = datetime.now(UTC)  # the one clock read: the verification time
    try:
        args = build_parser().parse_args(argv)
        command = {"fetch": cmd_fetch, "data-key": cmd_data_key, "check-secret": cmd_check_secret}[
            args.command
        ]
        return command(args, now=now)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RefusedError, ProviderError) as exc:
        print(f"{PROG}: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_REFUSED
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
