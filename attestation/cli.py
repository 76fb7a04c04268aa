"""``nitro-attest``: inspect, verify and simulate NSM attestation documents.

    nitro-attest inspect FILE [--json]
    nitro-attest verify FILE [--root PEM|aws|sim ...] [--at ISO8601|document] [--pcr N=HEX ...] [--eif IMAGE]
                             [--max-age SECONDS] [--allow-debug] [--nonce HEX] [--require-rsa-key]
    nitro-attest simulate [--public-key DER_OR_PEM] [--user-data HEX] [--nonce HEX] [--pcr N=HEX ...]
                          [--debug] [--module-id ID] [--at ISO8601] --out FILE

FILE is the raw COSE_Sign1 bytes, or the same as base64 or hex text; ``-`` reads standard input.
``inspect`` prints what the document *claims*, marked unverified. ``verify`` exits 0 with a one-line verdict,
1 with the pipeline step that failed, 2 for a usage error. Roots: ``aws`` is the embedded AWS Nitro Root-G1
(the default), ``sim`` the simulated root in ``$NITRO_SIM_HOME``, anything else a PEM or DER file.
Time: ``verify`` reads the clock once, at the start, unless ``--at`` gives the time.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from attestation._chain import parse_certificate, subject
from attestation.document import (
    MAX_DOCUMENT_BYTES,
    MAX_OPTIONAL_FIELD_BYTES,
    MAX_PCRS,
    AttestationDocument,
    decode_document,
)
from attestation.eif import MAX_EIF_BYTES, EifError, read_eif
from attestation.errors import AttestationError, MalformedDocumentError, MalformedError, VerificationError
from attestation.nsm import simulate_document
from attestation.policy import AllOf, MaxAge, Nonce, PCRs, Policy, RejectDebug, RSAPublicKey
from attestation.sim import sim_home
from attestation.verify import Verifier, aws_nitro_root, load_certificate

PROG = "nitro-attest"
#: Largest input file read (base64 text of the largest document, with slack for line breaks).
MAX_INPUT_BYTES = 2 * MAX_DOCUMENT_BYTES + 4096
#: Largest ``--root`` or ``--public-key`` file read (a root certificate is ~0.7 KB, an RSA-4096 PEM ~0.8 KB).
MAX_KEY_FILE_BYTES = 64 * 1024
#: Hex shown per optional field in the text summary (``--json`` always has all of it).
SUMMARY_HEX_CHARS = 64
#: Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_TEXT = re.compile(rb"^[\sA-Za-z0-9+/=_-]*$")
_HEX = re.compile(rb"^[\s0-9A-Fa-f]*$")


class UsageError(Exception):
    """Bad command line or unreadable input: exit 2 with one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# -- input helpers ---


#: Largest ``--max-age`` accepted: ten years, far past any certificate in a Nitro chain but for the root.
MAX_AGE_SECONDS = 10 * 365 * 24 * 3600


def read_document(path: str) -> bytes:
    """The document bytes from ``path`` (``-`` = stdin): raw CBOR, or base64 / hex text of it."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"{path} is larger than {MAX_INPUT_BYTES} bytes; not an attestation document")
    # A COSE_Sign1 starts with 0x84 (array of 4) or 0xd2 (tag 18): never ASCII, so text is unambiguous.
    if data and _TEXT.match(data):
        compact = b"".join(data.split())
        try:
            if _HEX.match(compact) and len(compact) % 2 == 0:
                return bytes.fromhex(compact.decode())
            return base64.b64decode(compact + b"=" * (-len(compact) % 4), altchars=_altchars(compact))
        except (ValueError, binascii.Error):
            raise UsageError(f"{path} is text but neither base64 nor hex") from None
    return data


def _read_small(path: str, what: str) -> bytes:
    """A certificate or key file, read up to :data:`MAX_KEY_FILE_BYTES` (it may be /dev/zero or a FIFO)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise UsageError(f"{what} {path}: larger than {MAX_KEY_FILE_BYTES} bytes")
    return data


def _altchars(text: bytes) -> bytes | None:
    return b"-_" if b"-" in text or b"_" in text else None


def _hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UsageError(f"{what} must be hex, got {value!r}") from None


def _pcr(value: str) -> tuple[int, bytes]:
    index, sep, digest = value.partition("=")
    if not sep or not index.strip().isdigit() or not 0 <= int(index) < MAX_PCRS:
        raise UsageError(f"--pcr wants N=HEX with N in 0..{MAX_PCRS - 1}, got {value!r}")
    raw = _hex(digest, f"--pcr {index}")
    if len(raw) != 48:
        raise UsageError(f"--pcr {index}: a PCR is 48 bytes (96 hex digits), got {len(raw)}")
    return int(index), raw


def _time(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        # An offset can carry a time past year 9999 or before year 1 in UTC (OverflowError).
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(f"--at wants an ISO 8601 time or 'document', got {value!r}") from None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: What ``datetime.fromtimestamp`` raises for a timestamp past year 9999 (the CDDL allows up to 2^64-1 ms).
_TIME_RANGE_ERRORS = (ValueError, OverflowError, OSError)


def _issued(doc: AttestationDocument) -> str:
    """The document's timestamp as ISO 8601, or a note that no calendar time holds it."""
    try:
        return _iso(doc.issued_at)
    except _TIME_RANGE_ERRORS:
        return "<past year 9999>"


def _sim_root() -> bytes:
    # attestation/pki.py keeps the root alone, for relying parties, in pki/root.crt: read it, create nothing.
    path = sim_home() / "pki" / "root.crt"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"--root sim: no simulated PKI at {path} (run `{PROG} simulate` first)") from None
    except OSError as exc:
        raise UsageError(f"--root sim: cannot read {path}: {exc.strerror or exc}") from None


def load_roots(values: Sequence[str]) -> list[x509.Certificate]:
    """Trust anchors named as ``--root`` takes them: ``aws``, ``sim`` (the home's root) or a PEM/DER file.

    An empty list means ``aws``. Raises :class:`UsageError` with one line naming the bad value.
    """
    roots = []
    for value in values or ["aws"]:
        if value == "aws":
            roots.append(aws_nitro_root())
            continue
        data = _sim_root() if value == "sim" else _read_small(value, "--root")
        if b"PRIVATE KEY-----" in data:
            # Trust anchors are certificates; a file with a key in it is not one to pass around.
            raise UsageError(
                f"--root {value}: holds a private key; pass the certificate only (e.g. pki/root.crt)"
            )
        try:
            roots.append(load_certificate(data))
        except ValueError as exc:
            raise UsageError(f"--root {value}: {exc}") from None
    return roots


# -- inspect ---


def _cert_info(der: bytes) -> dict[str, Any]:
    info: dict[str, Any] = {"bytes": len(der), "sha256": hashlib.sha256(der).hexdigest()}
    try:
        cert = parse_certificate("certificate", der)
    except MalformedDocumentError as exc:  # unverified input: show what cannot be parsed, carry on
        info["error"] = f"unparseable: {str(exc).removeprefix('certificate ')}"
        return info
    try:
        issuer = cert.issuer.rfc4514_string()
    except ValueError:
        issuer = "<unprintable issuer>"
    info.update(
        subject=subject(cert),
        issuer=issuer,
        not_before=_iso(cert.not_valid_before_utc),
        not_after=_iso(cert.not_valid_after_utc),
    )
    return info


def _optional(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def document_summary(doc: AttestationDocument) -> dict[str, Any]:
    """The document's claims as JSON-ready values (all UNVERIFIED)."""
    return {
        "verified": False,
        "module_id": doc.module_id,
        "digest": doc.digest,
        "timestamp": doc.timestamp,
        "issued_at": _issued(doc),
        "debug_mode": doc.debug_mode,
        "pcrs": {str(i): v.hex() for i, v in doc.pcrs.items()},
        "certificate": _cert_info(doc.certificate),
        "cabundle": [_cert_info(c) for c in doc.cabundle],
        "public_key": _optional(doc.public_key),
        "user_data": _optional(doc.user_data),
        "nonce": _optional(doc.nonce),
    }


def _short(value: bytes | None) -> str:
    if value is None:
        return "null"
    text = value.hex()
    if len(text) > SUMMARY_HEX_CHARS:
        text = text[:SUMMARY_HEX_CHARS] + "..."
    return f"{len(value)} bytes {text}".rstrip()


def _cert_line(info: dict[str, Any]) -> str:
    if "error" in info:
        return f"{info['error']} ({info['bytes']} bytes)"
    return f"{info['subject']}  valid {info['not_before']} .. {info['not_after']}"


def cmd_inspect(args: argparse.Namespace) -> int:
    doc = decode_document(read_document(args.file)).document
    summary = document_summary(doc)
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    lines = [
        f"UNVERIFIED attestation document (nothing below is checked; use `{PROG} verify`)",
        f"module_id    {doc.module_id}",
        f"digest       {doc.digest}",
        f"timestamp    {doc.timestamp} ({summary['issued_at']})",
        f"debug mode   {'yes (PCR0, PCR1, PCR2 are zero)' if doc.debug_mode else 'no'}",
        f"pcrs         {len(doc.pcrs)}",
        *(f"  PCR{i:<2}      {v.hex()}" for i, v in doc.pcrs.items()),
        f"certificate  {_cert_line(summary['certificate'])}",
        f"cabundle     {len(doc.cabundle)} certificates, root first",
        *(f"  [{i}]        {_cert_line(c)}" for i, c in enumerate(summary["cabundle"])),
        f"public_key   {_short(doc.public_key)}",
        f"user_data    {_short(doc.user_data)}",
        f"nonce        {_short(doc.nonce)}",
    ]
    print("\n".join(lines))
    return EXIT_OK


# -- verify ---


def _policy(args: argparse.Namespace) -> tuple[Policy | None, list[str]]:
    parts: list[Policy] = []
    names: list[str] = []
    if not args.allow_debug:
        parts.append(RejectDebug())
        names.append("not debug")
    expected = _image_pcrs(args.eif) if args.eif is not None else {}
    for index, value in (_pcr(v) for v in args.pcr):
        if expected.get(index, value) != value:
            raise UsageError(f"--pcr {index} differs from the image's PCR{index} (--eif)")
        expected[index] = value
    if expected:
        parts.append(PCRs(expected))
        names.append("PCR" + ",".join(str(i) for i in sorted(expected)))
    if args.max_age is not None:
        if not 0 <= args.max_age <= MAX_AGE_SECONDS:  # also refuses nan and inf
            raise UsageError(f"--max-age must be a number of seconds in 0..{MAX_AGE_SECONDS}")
        parts.append(MaxAge(timedelta(seconds=args.max_age)))
        names.append(f"age <= {args.max_age:g}s")
    if args.nonce is not None:
        nonce = _hex(args.nonce, "--nonce")
        if not 1 <= len(nonce) <= MAX_OPTIONAL_FIELD_BYTES:  # Nonce() raised ValueError: a traceback
            raise UsageError(f"--nonce must be 1..{MAX_OPTIONAL_FIELD_BYTES} bytes, got {len(nonce)}")
        parts.append(Nonce(nonce))
        names.append("nonce")
    if args.require_rsa_key:
        parts.append(RSAPublicKey())
        names.append("RSA public_key")
    return (AllOf(*parts) if parts else None), names


def _image_pcrs(path: str) -> dict[int, bytes]:
    """PCR0, PCR1, PCR2 (and PCR8 when signed) of the enclave image at ``path``, measured here."""
    try:
        with open(path, "rb") as fh:  # bounded: it may be /dev/zero
            data = fh.read(MAX_EIF_BYTES + 1)
        return read_eif(data).measurements.as_pcrs()
    except OSError as exc:
        raise UsageError(f"--eif {path}: {exc.strerror or exc}") from None
    except EifError as exc:
        raise UsageError(f"--eif {path}: {exc}") from None


def cmd_verify(args: argparse.Namespace, *, now: datetime) -> int:
    data = read_document(args.file)
    policy, checks = _policy(args)
    roots = load_roots(args.root)
    at = now if args.at in (None, "document") else _time(args.at)
    try:
        if args.at == "document":
            # The document's own claim of time (unverified until the chain holds at it); for old documents.
            try:
                at = decode_document(data).document.issued_at
            except _TIME_RANGE_ERRORS:  # no datetime holds a timestamp past year 9999
                print("FAILED at step timestamp: the document's timestamp is past year 9999", file=sys.stderr)
                return EXIT_FAILED
        doc = Verifier(roots=roots, chain_cache=False).verify(data, at=at, policy=policy)
    except VerificationError as exc:
        print(f"FAILED at step {exc.step}: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    except MalformedError as exc:
        print(f"FAILED at step decode: {exc}", file=sys.stderr)
        return EXIT_FAILED
    root = _chain_root(doc, roots)
    policy_text = ", ".join(checks) if checks else "none (authenticity only)"
    print(
        f"OK: {doc.module_id} issued {_issued(doc)}, verified at {_iso(at)}: chain to {root}, "
        f"ES384 signature, policy: {policy_text}"
    )
    return EXIT_OK


def _chain_root(doc: AttestationDocument, roots: Sequence[x509.Certificate]) -> str:
    for root in roots:
        if root.public_bytes(serialization.Encoding.DER) == doc.cabundle[0]:
            fp = hashlib.sha256(doc.cabundle[0]).hexdigest()
            return f"{root.subject.rfc4514_string()} (sha256 {fp[:16]}...)"
    return "a pinned root"  # pragma: no cover - the verifier guarantees cabundle[0] is pinned


# -- simulate ---


def _public_key(path: str) -> bytes:
    data = _read_small(path, "--public-key")
    if not data.lstrip().startswith(b"-----BEGIN"):
        return data  # DER, passed through as the NSM does (it does not parse public_key)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"--public-key {path}: not a PEM public key ({exc})") from None
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cmd_simulate(args: argparse.Namespace, *, now: datetime) -> int:
    at = now if args.at is None else _time(args.at)
    pcrs = dict(_pcr(v) for v in args.pcr) or None
    home = sim_home()
    try:
        data = simulate_document(
            home,
            at=at,
            public_key=None if args.public_key is None else _public_key(args.public_key),
            user_data=None if args.user_data is None else _hex(args.user_data, "--user-data"),
            nonce=None if args.nonce is None else _hex(args.nonce, "--nonce"),
            pcrs=pcrs,
            debug=args.debug,
            module_id=args.module_id,
        )
    except ValueError as exc:  # bad PCR index or module id, from the NSM's own checks
        raise UsageError(str(exc)) from None
    except OverflowError:  # the certificates' validity would run past year 9999 or before year 1
        raise UsageError(f"--at {args.at}: too far from today to issue certificates for") from None
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(out)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    doc = decode_document(data).document
    debug = " (debug mode)" if doc.debug_mode else ""
    print(
        f"wrote {len(data)} bytes to {out}: module {doc.module_id}, issued {_iso(doc.issued_at)}, "
        f"PCR0 {doc.pcrs[0].hex()[:16]}...{debug}, simulated root in {home}"
    )
    return EXIT_OK


# -- the command ---


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Inspect, verify and simulate AWS Nitro attestation documents.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    inspect = sub.add_parser("inspect", help="print a document's (unverified) contents")
    inspect.add_argument("file", help="document: raw CBOR, base64 or hex; - for stdin")
    inspect.add_argument("--json", action="store_true", help="print JSON")

    verify = sub.add_parser("verify", help="verify a document's chain, signature and policy")
    verify.add_argument("file", help="document: raw CBOR, base64 or hex; - for stdin")
    verify.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="PEM|aws|sim",
        help="pinned root: a PEM/DER file, 'aws' (AWS Nitro Root-G1, default) or 'sim' ($NITRO_SIM_HOME)",
    )
    verify.add_argument("--at", metavar="ISO8601|document", help="verification time (default: now)")
    verify.add_argument("--pcr", action="append", default=[], metavar="N=HEX", help="expected PCR value")
    verify.add_argument(
        "--eif", metavar="IMAGE.eif", help="expect the PCRs of this enclave image (0, 1, 2; 8 when signed)"
    )
    verify.add_argument("--max-age", type=float, metavar="SECONDS", help="maximum age of the timestamp")
    verify.add_argument("--allow-debug", action="store_true", help="accept debug-mode enclaves")
    verify.add_argument("--nonce", metavar="HEX", help="expected nonce")
    verify.add_argument(
        "--require-rsa-key", action="store_true", help="public_key must be an RSA 2048/3072/4096 SPKI"
    )

    simulate = sub.add_parser("simulate", help="issue a document from the simulated NSM in $NITRO_SIM_HOME")
    simulate.add_argument("--public-key", metavar="DER_OR_PEM", help="file: the public_key field")
    simulate.add_argument("--user-data", metavar="HEX", help="the user_data field")
    simulate.add_argument("--nonce", metavar="HEX", help="the nonce field")
    simulate.add_argument("--pcr", action="append", default=[], metavar="N=HEX", help="boot PCR N (0..15)")
    simulate.add_argument("--debug", action="store_true", help="debug mode: PCR0, PCR1, PCR2 are zero")
    simulate.add_argument("--module-id", metavar="ID", help="i-<17 hex>-enc<16 hex> (default: a new one)")
    simulate.add_argument("--at", metavar="ISO8601", help="issue time (default: now)")
    simulate.add_argument("--out", required=True, metavar="FILE", help="where to write the document")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nitro-attest``; returns the exit code."""
    now = datetime.now(UTC)  # the one clock read: the default verification time
    try:
        args = build_parser().parse_args(argv)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "simulate":
            return cmd_simulate(args, now=now)
        return cmd_verify(args, now=now)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AttestationError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
