"""``nitro-attest simulate`` and ``verify --root sim`` against the simulated NSM and PKI in NITRO_SIM_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.cli import main

PCR0 = "ab" * 48
AT = "2026-11-29T12:00:00Z"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_then_verify(capsys: Any, sim_home: Path, tmp_path: Path) -> None:
    doc = tmp_path / "doc.cbor"
    code, out, err = run(
        capsys, "simulate", "--out", str(doc), "--pcr", f"0={PCR0}", "--nonce", "abcd", "--user-data", "00ff",
        "--at", AT,
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith(f"wrote {doc.stat().st_size} bytes to {doc}: module i-")
    assert f"simulated root in {sim_home}" in out
    code, out, err = run(
        capsys, "verify", str(doc), "--root", "sim", "--at", "2026-11-29T12:00:05Z", "--pcr", f"0={PCR0}",
        "--nonce", "abcd", "--max-age", "60",
    )  # fmt: skip
    assert code == 0, err
    assert "chain to CN=sim.aws.nitro-enclaves" in out
    assert "policy: not debug, PCR0, age <= 60s, nonce" in out
    # The default root is AWS's: a simulated document is refused there.
    code, _, err = run(capsys, "verify", str(doc), "--at", AT)
    assert code == 1
    assert err.startswith("FAILED at step chain: cabundle[0] (CN=sim.aws.nitro-enclaves")
    # JSON inspection shows what was asked for.
    code, out, _ = run(capsys, "inspect", "--json", str(doc))
    summary = json.loads(out)
    assert summary["pcrs"]["0"] == PCR0
    assert summary["nonce"] == "abcd"
    assert summary["user_data"] == "00ff"
    assert summary["public_key"] is None


def test_simulate_public_key_pem_and_der(capsys: Any, sim_home: Path, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for name, content in (("key.pem", pem), ("key.der", der)):
        (tmp_path / name).write_bytes(content)
        doc = tmp_path / f"{name}.cbor"
        code, _, err = run(
            capsys, "simulate", "--public-key", str(tmp_path / name), "--out", str(doc), "--at", AT
        )
        assert code == 0, err
        code, out, err = run(capsys, "verify", str(doc), "--root", "sim", "--at", AT, "--require-rsa-key")
        assert code == 0, err
        assert "RSA public_key" in out
        code, out, _ = run(capsys, "inspect", "--json", str(doc))
        assert json.loads(out)["public_key"] == der.hex()


def test_simulate_debug(capsys: Any, sim_home: Path, tmp_path: Path) -> None:
    doc = tmp_path / "debug.cbor"
    code, out, _ = run(capsys, "simulate", "--debug", "--out", str(doc), "--at", AT)
    assert code == 0
    assert "(debug mode)" in out
    code, _, err = run(capsys, "verify", str(doc), "--root", "sim", "--at", AT)
    assert (code, err) == (
        1,
        "FAILED at step policy: pcrs: the enclave runs in debug mode (PCR0, PCR1 and PCR2 are zero)\n",
    )
    code, _, _ = run(capsys, "verify", str(doc), "--root", "sim", "--at", AT, "--allow-debug")
    assert code == 0


@pytest.mark.parametrize(
    "case",
    [
        (["--pcr", f"16={PCR0}"], 2, "boot PCR index must be in 0..15"),
        (["--user-data", "ab" * 1025], 1, "InputTooLarge"),
        (["--nonce", "xyz"], 2, "--nonce must be hex"),
        (["--module-id", "enclave-1"], 2, "module_id must be i-<17 hex>-enc<16 hex>"),
        (["--public-key", "/nonexistent.pem"], 2, "--public-key /nonexistent.pem"),
    ],
    ids=["pcr16", "user-data-too-large", "nonce-not-hex", "module-id", "public-key-missing"],
)
def test_simulate_errors(
    capsys: Any, sim_home: Path, tmp_path: Path, case: tuple[list[str], int, str]
) -> None:
    argv, code, message = case
    got, out, err = run(capsys, "simulate", "--out", str(tmp_path / "x.cbor"), *argv)
    assert got == code
    assert out == ""
    assert message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "x.cbor").exists()


def test_verify_root_sim_without_a_pki(capsys: Any, sim_home: Path, vectors: Path) -> None:
    doc = vectors / "attestation/nitro-2025-04-29-marlin-prod-17pcrs.cbor"
    code, _, err = run(capsys, "verify", str(doc), "--root", "sim")
    assert code == 2
    assert "--root sim: no simulated PKI at" in err


def test_installed_script_simulates_and_verifies(sim_home: Path, tmp_path: Path) -> None:
    script = str(Path(sys.executable).parent / "nitro-attest")
    env = {**os.environ, "NITRO_SIM_HOME": str(sim_home)}
    doc = tmp_path / "doc.cbor"
    made = subprocess.run(
        [script, "simulate", "--out", str(doc)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    checked = subprocess.run(
        [script, "verify", str(doc), "--root", "sim"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("OK: i-")


def test_verify_root_sim_with_a_broken_root_file(capsys: Any, sim_home: Path, tmp_path: Path) -> None:
    doc = tmp_path / "doc.cbor"
    assert run(capsys, "simulate", "--out", str(doc))[0] == 0
    (sim_home / "pki/root.crt").write_text("garbage")
    code, out, err = run(capsys, "verify", str(doc), "--root", "sim")
    assert code == 2
    assert out == ""
    assert err.startswith("nitro-attest: error: --root sim: not a PEM or DER X.509 certificate")


def test_verify_expects_the_pcrs_of_an_image(capsys: Any, sim_home: Path, tmp_path: Path) -> None:
    from attestation.eif import build_eif, read_eif

    def image(app: bytes) -> Path:
        path = tmp_path / f"{app.hex()}.eif"
        path.write_bytes(build_eif(kernel=b"k", cmdline=b"c", ramdisks=[b"boot", app], metadata=None))
        return path

    ours, other = image(b"app"), image(b"app!")
    pcrs = read_eif(ours.read_bytes()).measurements.as_pcrs()
    doc = tmp_path / "doc.cbor"
    argv = ["simulate", "--out", str(doc), "--at", AT, *(f"--pcr={i}={v.hex()}" for i, v in pcrs.items())]
    assert run(capsys, *argv)[0] == 0
    code, out, err = run(capsys, "verify", str(doc), "--root", "sim", "--at", AT, "--eif", str(ours))
    assert code == 0, err
    assert "policy: not debug, PCR0,1,2" in out
    code, _, err = run(capsys, "verify", str(doc), "--root", "sim", "--at", AT, "--eif", str(other))
    assert code == 1
    assert err.startswith("FAILED at step policy: pcrs[0] is ")
    code, _, err = run(capsys, "verify", str(doc), "--root", "sim", "--eif", str(ours), "--pcr", f"0={PCR0}")
    assert code == 2
    assert "differs from the image's PCR0" in err
    (tmp_path / "junk.eif").write_bytes(b"junk")
    code, _, err = run(capsys, "verify", str(doc), "--root", "sim", "--eif", str(tmp_path / "junk.eif"))
    assert code == 2
    assert "not an EIF" in err
