"""``nitro-attest``: tests call ``main([...])`` and read its output; one runs the installed script."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from attestation._chain import _tlv
from attestation.cli import main

_VECTORS = Path(
    os.environ.get("ATTESTED_RANDOM_VECTORS", Path(__file__).resolve().parents[3] / "shared/test-vectors")
)
REAL = sorted(p.name for p in (_VECTORS / "attestation").glob("*.cbor"))
SUI = "nitro-2024-11-14-sui-debug-pcr34.cbor"
MARLIN = "nitro-2025-04-29-marlin-prod-17pcrs.cbor"
MARLIN_PCR0 = (
    "2984ab215649c40ffe8f8b80cfadee47f1b06760f7d9257981f64b2758c347fafa6c733591b25e75ae7e9d1cb86ad5df"
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _vec(vectors: Path, name: str) -> str:
    return str(vectors / "attestation" / name)


@pytest.mark.parametrize("name", REAL)
def test_verify_real_documents_at_their_time(capsys: Any, vectors: Path, name: str) -> None:
    code, out, err = run(capsys, "verify", _vec(vectors, name), "--at", "document", "--allow-debug")
    assert code == 0, err
    assert out.startswith("OK: i-")
    assert out.count("\n") == 1
    assert "chain to CN=aws.nitro-enclaves" in out
    assert "policy: none (authenticity only)" in out


@pytest.mark.parametrize("name", REAL)
def test_verify_real_documents_today_fails_at_chain(capsys: Any, vectors: Path, name: str) -> None:
    code, out, err = run(capsys, "verify", _vec(vectors, name), "--allow-debug")
    assert code == 1
    assert out == ""
    assert err.startswith("FAILED at step chain: cabundle[1] ")
    assert "expired at" in err
    assert err.count("\n") == 1


def test_verify_rejects_debug_by_default(capsys: Any, vectors: Path) -> None:
    code, _, err = run(capsys, "verify", _vec(vectors, SUI), "--at", "document")
    assert code == 1
    assert (
        err == "FAILED at step policy: pcrs: the enclave runs in debug mode (PCR0, PCR1 and PCR2 are zero)\n"
    )


def test_verify_with_pcr_nonce_and_age(capsys: Any, vectors: Path) -> None:
    doc = _vec(vectors, MARLIN)
    at = "2025-04-29T10:32:49.691Z"  # ten seconds after the document
    code, out, _ = run(capsys, "verify", doc, "--at", at, "--pcr", f"0={MARLIN_PCR0}", "--max-age", "60")
    assert code == 0
    assert "policy: not debug, PCR0, age <= 60s" in out
    code, _, err = run(capsys, "verify", doc, "--at", at, "--max-age", "5")
    assert code == 1
    assert err.startswith("FAILED at step policy: timestamp: the document is 10.000 s old")
    code, _, err = run(capsys, "verify", doc, "--at", at, "--pcr", "0=" + "00" * 48)
    assert code == 1
    assert err.startswith("FAILED at step policy: pcrs[0] is 2984ab")
    code, _, err = run(capsys, "verify", doc, "--at", at, "--nonce", "abcd")
    assert err == "FAILED at step policy: nonce is absent; the policy expects one\n"
    code, _, err = run(capsys, "verify", doc, "--at", at, "--require-rsa-key")
    assert err == "FAILED at step policy: public_key is not a DER SubjectPublicKeyInfo\n"


def test_verify_with_an_explicit_root_file(capsys: Any, vectors: Path, tmp_path: Path, chain: Any) -> None:
    aws_pem = str(vectors / "attestation/aws-nitro-enclaves-root-g1.pem")
    code, _, _ = run(capsys, "verify", _vec(vectors, MARLIN), "--at", "document", "--root", aws_pem)
    assert code == 0
    other = tmp_path / "other.der"
    other.write_bytes(chain.root_der)
    code, _, err = run(capsys, "verify", _vec(vectors, MARLIN), "--at", "document", "--root", str(other))
    assert code == 1
    assert err.startswith("FAILED at step chain: cabundle[0] (CN=aws.nitro-enclaves")
    assert "is not a pinned root" in err


def test_verify_refuses_a_root_file_holding_a_private_key(capsys: Any, vectors: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "root.pem"
    bundle.write_bytes(
        (vectors / "attestation/aws-nitro-enclaves-root-g1.pem").read_bytes()
        + b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    code, _, err = run(capsys, "verify", _vec(vectors, MARLIN), "--at", "document", "--root", str(bundle))
    assert code == 2
    assert "holds a private key" in err


def test_verify_fixture_document_and_a_corrupted_one(
    capsys: Any, tmp_path: Path, chain: Any, nitro: Any
) -> None:
    root = tmp_path / "root.der"
    root.write_bytes(chain.root_der)
    good = tmp_path / "doc.cbor"
    data = chain.sign()
    good.write_bytes(data)
    at = nitro.t0.isoformat()
    code, out, _ = run(capsys, "verify", str(good), "--root", str(root), "--at", at)
    assert code == 0
    assert "CN=sim.nitro-enclaves" in out
    bad = tmp_path / "bad.cbor"
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    code, _, err = run(capsys, "verify", str(bad), "--root", str(root), "--at", at)
    assert (code, err) == (1, "FAILED at step signature: COSE_Sign1 signature does not verify\n")
    junk = tmp_path / "junk.cbor"
    junk.write_bytes(b"\x84\x01")
    for when in (at, "document"):
        code, _, err = run(capsys, "verify", str(junk), "--root", str(root), "--at", when)
        assert code == 1
        assert err.startswith("FAILED at step decode: attestation document: invalid CBOR")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "/nonexistent/doc"], "cannot read /nonexistent/doc"),
        (["verify", "DOC", "--pcr", "0=zz"], "--pcr 0 must be hex"),
        (["verify", "DOC", "--pcr", "40=00"], "--pcr wants N=HEX with N in 0..31"),
        (["verify", "DOC", "--pcr", "0=0000"], "a PCR is 48 bytes"),
        (["verify", "DOC", "--at", "yesterday"], "--at wants an ISO 8601 time or 'document'"),
        (["verify", "DOC", "--nonce", "xyz"], "--nonce must be hex"),
        (["verify", "DOC", "--max-age", "-1"], "--max-age must be a number of seconds in 0.."),
        (["verify", "DOC", "--max-age", "nan"], "--max-age must be a number of seconds in 0.."),
        (["verify", "DOC", "--max-age", "inf"], "--max-age must be a number of seconds in 0.."),
        (["verify", "DOC", "--max-age", "1e400"], "--max-age must be a number of seconds in 0.."),
        (["verify", "DOC", "--root", "/nonexistent.pem"], "--root /nonexistent.pem"),
        (["verify", "DOC", "--root", "DOC"], "not a PEM or DER X.509 certificate"),
        (["verify"], "the following arguments are required: file"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys: Any, vectors: Path, argv: list[str], message: str) -> None:
    argv = [_vec(vectors, MARLIN) if a == "DOC" else a for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("nitro-attest: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_inspect_text(capsys: Any, vectors: Path) -> None:
    code, out, _ = run(capsys, "inspect", _vec(vectors, SUI))
    assert code == 0
    assert out.startswith("UNVERIFIED attestation document")
    assert "module_id    i-0f73a4b4cb74cc9f2-enc0192e4188fef781d" in out
    assert "timestamp    1731627989450 (2024-11-14T23:46:29.450Z)" in out
    assert "debug mode   yes" in out
    assert "  PCR15 " in out
    assert "[0]        CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US  valid 2019-10-28T13:28:05.000Z" in out
    assert "public_key   null" in out
    assert "user_data    32 bytes 5a264748" in out


def test_inspect_json_accepts_base64_hex_and_stdin(
    capsys: Any, vectors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = (vectors / "attestation" / MARLIN).read_bytes()
    b64 = tmp_path / "doc.b64"
    b64.write_bytes(base64.encodebytes(raw))
    hexfile = tmp_path / "doc.hex"
    hexfile.write_text(raw.hex())
    outputs = []
    for path in (_vec(vectors, MARLIN), str(b64), str(hexfile)):
        code, out, _ = run(capsys, "inspect", "--json", path)
        assert code == 0
        outputs.append(json.loads(out))
    assert outputs[0] == outputs[1] == outputs[2]
    summary = outputs[0]
    assert summary["verified"] is False
    assert len(summary["pcrs"]) == 17
    assert summary["pcrs"]["0"] == MARLIN_PCR0
    assert summary["user_data"] == ""
    assert summary["nonce"] is None
    assert summary["cabundle"][0]["sha256"].startswith("641a0321")
    assert summary["certificate"]["subject"].startswith("CN=i-07859a25773d39fcc-enc01968119042c6454")

    class Stdin:
        buffer = __import__("io").BytesIO(raw)

    monkeypatch.setattr(sys, "stdin", Stdin)
    code, out, _ = run(capsys, "inspect", "--json", "-")
    assert json.loads(out) == summary


def test_inspect_malformed_is_one_line(capsys: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.cbor"
    bad.write_bytes(b"\x84\x40\xa0\x40\x40")
    code, out, err = run(capsys, "inspect", str(bad))
    assert code == 1
    assert out == ""
    assert err.startswith("nitro-attest: ")
    assert err.count("\n") == 1
    text = tmp_path / "text"
    for content in ("this is not base64!", "abc", "0"):
        text.write_text(content)
        code, out, err = run(capsys, "inspect", str(text))
        assert code in (1, 2)
        assert out == ""
        assert err.count("\n") == 1


def test_installed_script(vectors: Path) -> None:
    script = Path(sys.executable).parent / "nitro-attest"
    ok = subprocess.run(
        [str(script), "verify", _vec(vectors, MARLIN), "--at", "document"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: i-07859a25773d39fcc-enc01968119042c6454")
    expired = subprocess.run(
        [str(script), "verify", _vec(vectors, MARLIN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert expired.returncode == 1
    assert expired.stderr.startswith("FAILED at step chain:")
    assert "Traceback" not in expired.stderr


def test_inspect_shows_unparseable_certificates(capsys: Any, tmp_path: Path, chain: Any) -> None:
    leaf = bytearray(chain.leaf_der)
    # Make the serial number negative (RFC 5280 forbids it; cryptography would only warn).
    _, cert_start, _ = _tlv(bytes(leaf), 0)
    _, tbs_start, _ = _tlv(bytes(leaf), cert_start)
    _, _, version_end = _tlv(bytes(leaf), tbs_start)  # [0] version
    _, serial_at, _ = _tlv(bytes(leaf), version_end)
    leaf[serial_at] |= 0x80
    doc = tmp_path / "doc.cbor"
    doc.write_bytes(
        chain.sign(certificate=bytes(leaf), cabundle=(chain.cabundle[0], b"\x30\x03\x02\x01\x01"))
    )
    code, out, err = run(capsys, "inspect", str(doc))
    assert code == 0, err
    assert "certificate  unparseable: has a serial number that is not positive" in out
    assert "[1]        unparseable: is not a DER X.509 certificate" in out
    code, out, _ = run(capsys, "inspect", "--json", str(doc))
    assert json.loads(out)["cabundle"][1]["error"].startswith("unparseable:")
