"""`nitro-cli build-enclave`, `describe-eif`, `pcr` and `sign-eif` as processes, on the project's own
Dockerfile.enclave: reproducible images, measurements that move only where they should, nitro-cli's JSON."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation.cpio import read_newc
from attestation.eif import read_eif
from nitro_sim.enclaves import copy_build_context

REPO = Path(__file__).resolve().parents[2]
NITRO_CLI = Path(sys.executable).parent / "nitro-cli"
#: What Dockerfile.enclave copies (with the Dockerfile and its .dockerignore).


def run(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NITRO_", "SOURCE_DATE"))}
    env["NITRO_SIM_HOME"] = str(home)
    done = subprocess.run(
        [str(NITRO_CLI), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(f"nitro-cli {args[0]} exited {done.returncode}: {done.stderr}")
    return done


def copy_context(dest: Path) -> Path:
    """A copy of the provider image's build context (what build-enclave of the project may read)."""
    return copy_build_context(REPO, dest)


def build(context: Path, out: Path, home: Path, *extra: str) -> dict[str, str]:
    done = run(
        "build-enclave",
        "--docker-uri",
        "attested-random:latest",
        "--docker-dir",
        str(context),
        "--output-file",
        str(out),
        *extra,
        home=home,
    )
    assert "Enclave Image successfully created." in done.stderr
    measurements: dict[str, str] = json.loads(done.stdout)["Measurements"]
    return measurements


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    base = tmp_path_factory.mktemp("build")
    context = copy_context(base / "ctx")
    home = base / "home"
    home.mkdir()
    return base / "a.eif", build(context, base / "a.eif", home), home


def test_two_copies_of_the_tree_give_byte_identical_images(
    built: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    eif, measurements, home = built
    other = copy_context(tmp_path / "elsewhere" / "deeper")
    for path in other.rglob("*"):  # other times and modes than the first copy
        os.utime(path, (1_000_000, 1_000_000))
    (other / "enclave" / "app.py").chmod(0o600)
    assert build(other, tmp_path / "b.eif", home) == measurements
    assert (tmp_path / "b.eif").read_bytes() == eif.read_bytes()


def test_build_output_is_nitro_clis(built: tuple[Path, dict[str, str], Path]) -> None:
    _, measurements, _ = built
    assert list(measurements) == ["HashAlgorithm", "PCR0", "PCR1", "PCR2"]
    assert measurements["HashAlgorithm"] == "Sha384 { ... }"
    assert all(
        len(measurements[k]) == 96 and measurements[k] == measurements[k].lower()
        for k in ("PCR0", "PCR1", "PCR2")
    )


def test_one_changed_application_byte_moves_pcr0_and_pcr2_not_pcr1(
    built: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    _, measurements, home = built
    context = copy_context(tmp_path / "ctx")
    target = context / "enclave" / "provider.py"
    data = bytearray(target.read_bytes())
    data[-2] ^= 0x20
    target.write_bytes(bytes(data))
    changed = build(context, tmp_path / "c.eif", home)
    assert changed["PCR1"] == measurements["PCR1"]
    assert changed["PCR0"] != measurements["PCR0"]
    assert changed["PCR2"] != measurements["PCR2"]


def test_describe_eif_agrees_with_build(built: tuple[Path, dict[str, str], Path]) -> None:
    eif, measurements, home = built
    info = json.loads(run("describe-eif", "--eif-path", str(eif), home=home).stdout)
    assert list(info)[:4] == ["EifVersion", "Measurements", "IsSigned", "CheckCRC"]
    assert info["EifVersion"] == 4
    assert info["Measurements"] == measurements
    assert info["IsSigned"] is False
    assert info["CheckCRC"] is True
    assert info["ImageName"] == "attested-random"
    assert info["Metadata"]["BuildTool"] == "nitro-cli"
    assert info["Metadata"]["DockerInfo"]["Config"]["Cmd"] == ["python3", "-m", "enclave.provider"]


def test_the_application_ramdisk_holds_rootfs_cmd_and_env(built: tuple[Path, dict[str, str], Path]) -> None:
    eif, _, _ = built
    boot, app = read_eif(eif.read_bytes()).ramdisks
    assert [e.path for e in read_newc(boot)] == ["dev", "init", "nsm.ko"]
    members = {e.path: e for e in read_newc(app)}
    assert members["cmd"].data == b"python3\n-m\nenclave.provider\n"
    assert b"PYTHONUNBUFFERED=1\n" in members["env"].data
    assert "rootfs/enclave/provider.py" in members
    assert members["rootfs/enclave/provider.py"].data == (REPO / "enclave" / "provider.py").read_bytes()
    assert not any("__pycache__" in name or name.startswith("rootfs/tests") for name in members)
    paths = [e.path for e in read_newc(app)]
    assert paths == sorted(paths)


def test_a_corrupted_image_fails_the_crc(built: tuple[Path, dict[str, str], Path], tmp_path: Path) -> None:
    eif, _, home = built
    data = bytearray(eif.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.eif"
    bad.write_bytes(bytes(data))
    info = json.loads(run("describe-eif", "--eif-path", str(bad), home=home).stdout)
    assert info["CheckCRC"] is False
    done = run(
        "sign-eif",
        "--eif-path",
        str(bad),
        "--signing-certificate",
        "x",
        "--private-key",
        "y",
        home=home,
        check=False,
    )
    assert done.returncode != 0


@pytest.mark.parametrize(
    "data", [b"", b"not an eif at all" * 40, b".eif" + bytes(100)], ids=["empty", "text", "short"]
)
def test_foreign_files_are_one_clear_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "x.eif"
    path.write_bytes(data)
    done = run("describe-eif", "--eif-path", str(path), home=tmp_path, check=False)
    assert done.returncode == 35
    assert "Traceback" not in done.stderr
    assert "[ E35 ]" in done.stderr


def _signing_files(tmp_path: Path) -> tuple[Path, Path, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ci signer")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA384())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path, cert


def test_signed_build_sign_eif_and_pcr8(built: tuple[Path, dict[str, str], Path], tmp_path: Path) -> None:
    eif, measurements, home = built
    cert_path, key_path, cert = _signing_files(tmp_path)
    pcr8 = hashlib.sha384(
        b"\0" * 48 + hashlib.sha384(cert.public_bytes(serialization.Encoding.DER)).digest()
    ).hexdigest()
    assert json.loads(run("pcr", "--signing-certificate", str(cert_path), home=home).stdout) == {"PCR8": pcr8}
    signed = tmp_path / "signed.eif"
    shutil.copy(eif, signed)
    done = run(
        "sign-eif",
        "--eif-path",
        str(signed),
        "--signing-certificate",
        str(cert_path),
        "--private-key",
        str(key_path),
        home=home,
    )
    assert json.loads(done.stdout)["Measurements"] == {**measurements, "PCR8": pcr8}
    info = json.loads(run("describe-eif", "--eif-path", str(signed), home=home).stdout)
    assert info["IsSigned"] is True
    assert info["SignatureCheck"] is True
    assert info["CheckCRC"] is True
    assert info["SigningCertificate"]["IssuerName"] == {"commonName": "ci signer"}
    assert info["SigningCertificate"]["Algorithm"] == "ecdsa-with-SHA384"


def test_pcr_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    expected = hashlib.sha384(b"\0" * 48 + hashlib.sha384(b"abc").digest()).hexdigest()
    assert json.loads(run("pcr", "--input", str(path), home=tmp_path).stdout) == {"PCR": expected}


def test_nitro_cli_blobs_replaces_the_simulated_kernel_and_bootstrap(
    built: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    from host.nitro_cli._blobs import SIMULATED_BLOBS

    _, measurements, home = built
    blobs = tmp_path / "blobs"
    shutil.copytree(SIMULATED_BLOBS, blobs)
    (blobs / "bzImage").write_bytes(b"another kernel")
    context = copy_context(tmp_path / "ctx")
    env_out = tmp_path / "real-blobs.eif"
    done = subprocess.run(
        [str(NITRO_CLI), "build-enclave", "--docker-uri", "x", "--docker-dir", str(context),
         "--output-file", str(env_out)],
        env={**os.environ, "NITRO_SIM_HOME": str(home), "NITRO_CLI_BLOBS": str(blobs)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    other = json.loads(done.stdout)["Measurements"]
    assert other["PCR2"] == measurements["PCR2"]
    assert other["PCR0"] != measurements["PCR0"]
    assert other["PCR1"] != measurements["PCR1"]
    (blobs / "cmdline").unlink()
    done = subprocess.run(
        [str(NITRO_CLI), "build-enclave", "--docker-uri", "x", "--docker-dir", str(context),
         "--output-file", str(env_out)],
        env={**os.environ, "NITRO_SIM_HOME": str(home), "NITRO_CLI_BLOBS": str(blobs)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 19
    assert "[ E19 ]" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_dockerfile_error_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM scratch\nONBUILD RUN x\nCMD ["x"]\n')
    done = run(
        "build-enclave", "--docker-uri", "x", "--docker-dir", str(tmp_path), "--output-file",
        str(tmp_path / "x.eif"), home=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 49
    assert "Dockerfile:2: ONBUILD" in done.stderr
    assert "[ E49 ]" in done.stderr
    assert not (tmp_path / "x.eif").exists()
