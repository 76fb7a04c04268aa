"""The image commands: ``build-enclave``, ``describe-eif``, ``pcr`` and ``sign-eif`` (src/lib.rs).

``build-enclave`` has no Docker engine to ask: it reads the Dockerfile in ``--docker-dir`` (see
:mod:`host.nitro_cli._dockerfile`), packs the image's files under ``rootfs/`` with the ``cmd`` and ``env``
files the bootstrap reads, adds the bootstrap ramdisk of the blobs (:mod:`host.nitro_cli._blobs`) and writes
the EIF with :mod:`attestation.eif`. Everything that goes into the file is fixed by the inputs: members
sorted, times, owners and modes normalised, the build time taken from ``SOURCE_DATE_EPOCH`` (the
reproducible-builds convention) or, when unset, the Unix epoch.
Two builds of the same tree give the same bytes.

Output as nitro-cli's: progress lines on stderr, the pretty JSON on stdout, failures as
:class:`NitroCliError` with nitro-cli's codes (E19 file operations, E48 EIF building, E49 the Docker build,
E50 no image to pull, E35 parsing an EIF, E57 hashing, E60 signing). The one-line reason of a failure is
printed to stderr before the code's text, as nitro-cli prints Docker's and linuxkit's own errors.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attestation.cpio import CpioEntry, CpioError, write_newc
from attestation.eif import (
    MAX_EIF_BYTES,
    EifError,
    EifImage,
    build_eif,
    decode_signature_section,
    measure,
    pcr_of,
    read_eif,
    replace_signature,
)
from attestation.eif_sign import MAX_KEY_PEM_BYTES, EifSigner, signature_matches
from host.nitro_cli._blobs import Blobs, load_blobs
from host.nitro_cli._json import image_identity, metadata_describe_info, pretty
from host.nitro_cli.errors import NITRO_CLI_VERSION, NitroCliError

__all__ = ["build_enclave", "describe_eif", "pcr", "sign_eif"]

#: ``parse_custom_metadata``'s bound on the --metadata file (identity.rs ``MAX_META_FILE_SIZE``).
MAX_METADATA_FILE_BYTES = 4096
#: Bound on a --signing-certificate / pcr --input PEM file.
MAX_PEM_FILE_BYTES = 64 * 1024
#: Bound on a file hashed by ``pcr --input``.
MAX_PCR_INPUT_BYTES = MAX_EIF_BYTES
#: The directories nitro-cli's customer-ramdisk template adds under ``rootfs/`` (yaml_generator.rs).
ROOTFS_DIRS = ("dev", "run", "sys", "var", "proc", "tmp")
ENV_SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
BUILD_TOOL = "nitro-cli"
_DIR = stat.S_IFDIR | 0o755
_FILE = stat.S_IFREG | 0o644


def print_json(value: object) -> None:
    """Print as ``serde_json::to_string_pretty`` does (:func:`host.nitro_cli._json.pretty`)."""
    print(pretty(value))


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _read(path: str, bound: int, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(bound + 1)
    except OSError as exc:
        raise NitroCliError(
            "E19", [path, "Open"], subaction=f"Could not open {what}: {exc.strerror}"
        ) from None
    if len(data) > bound:
        raise NitroCliError("E19", [path, "Read"], subaction=f"{what} is over the {bound}-byte bound")
    return data


def build_time(environ: Mapping[str, str] | None = None) -> str:
    """The build time recorded in the metadata: ``SOURCE_DATE_EPOCH`` or the epoch, as chrono's RFC 3339."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_SOURCE_DATE_EPOCH, "0").strip() or "0"
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise NitroCliError("E48", subaction=f"{ENV_SOURCE_DATE_EPOCH} must be a whole number of seconds")
    return datetime.fromtimestamp(int(raw), UTC).isoformat()


def _custom_metadata(path: str | None) -> Any:
    if path is None:
        return None
    if not Path(path).is_file():
        raise NitroCliError("E48", subaction="Failed to create EIF image: Specified path is not a file")
    raw = _read(path, MAX_METADATA_FILE_BYTES, "custom metadata file")
    if len(raw) > MAX_METADATA_FILE_BYTES:
        raise NitroCliError(
            "E48", subaction=f"Metadata file size exceeded limit of {MAX_METADATA_FILE_BYTES}B"
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise NitroCliError("E48", subaction=f"Failed to deserialize json: {str(exc)[:200]}") from None


def application_ramdisk(entries: tuple[CpioEntry, ...], cmd_file: bytes, env_file: bytes) -> bytes:
    """The second ramdisk: ``cmd``, ``env`` and the image under ``rootfs/``, sorted, template dirs added."""
    members = {e.path: e for e in entries}
    for name in ROOTFS_DIRS:
        members.setdefault(name, CpioEntry(path=name, mode=_DIR))
    out = [
        CpioEntry(path="cmd", mode=_FILE, data=cmd_file),
        CpioEntry(path="env", mode=_FILE, data=env_file),
        CpioEntry(path="rootfs", mode=_DIR),
    ]
    out += [CpioEntry(path=f"rootfs/{e.path}", mode=e.mode, data=e.data) for e in members.values()]
    out.sort(key=lambda e: e.path.encode("utf-8", "surrogateescape"))
    return write_newc(out)


def _signer(certificate: str | None, key: str | None) -> EifSigner | None:
    if certificate is None and key is None:
        return None
    if certificate is None or key is None:
        raise NitroCliError("E48", subaction="Failed to create EIF image: SignArgsError")
    if key.startswith("arn:"):
        raise NitroCliError(
            "E60", subaction="signing with a KMS key is not available in the simulation: give a PEM key file"
        )
    cert_pem = _read(certificate, MAX_PEM_FILE_BYTES, "the certificate file")
    key_pem = _read(key, MAX_KEY_PEM_BYTES, "the key file")
    try:
        return EifSigner.from_pem(cert_pem, key_pem)
    except EifError as exc:
        raise NitroCliError("E48", subaction=f"Failed to create EIF image: SignImageError({exc})") from None


def _write_atomically(path: str, data: bytes) -> None:
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}."
        )
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        raise NitroCliError(
            "E19", [path, "Open"], subaction=f"Could not create output file: {exc.strerror}"
        ) from None


def build_image(args: argparse.Namespace, blobs: Blobs) -> tuple[bytes, dict[str, Any]]:
    """The EIF bytes for ``args`` and its measurements as nitro-cli prints them."""
    from host.nitro_cli._dockerfile import DockerfileError, plan_image  # noqa: PLC0415 - build only

    signer = _signer(args.signing_certificate, args.private_key)
    custom = _custom_metadata(args.metadata)
    if args.docker_dir is None:
        raise NitroCliError(
            "E50",
            subaction=f"Failed to pull docker image {args.docker_uri}: the simulation has no Docker engine "
            "or registry; build from a directory with --docker-dir",
        )
    try:
        plan = plan_image(Path(args.docker_dir), docker_uri=args.docker_uri)
        cmd_file, env_file = plan.cmd_file(), plan.env_file()
        inspect = plan.inspect()
    except DockerfileError as exc:
        _say(f"Docker error: {exc}")
        raise NitroCliError("E49", subaction=f"Failed to build docker image: {exc}") from None
    for line_number, text in plan.not_executed:
        _say(f"{plan.dockerfile}:{line_number}: RUN not executed (no Docker engine): {text}")
    try:
        ramdisks = [blobs.bootstrap_ramdisk(), application_ramdisk(plan.entries, cmd_file, env_file)]
    except CpioError as exc:
        raise NitroCliError("E48", subaction=f"Ramfs error: {exc}") from None
    image_id = str(inspect.get("Id", "")).removeprefix("sha256:")
    metadata = {
        "ImageName": args.name or args.docker_uri.split(":")[0],
        "ImageVersion": args.image_version or image_id,
        "BuildMetadata": {
            "BuildTime": build_time(),
            "BuildTool": BUILD_TOOL,
            "BuildToolVersion": NITRO_CLI_VERSION,
            "OperatingSystem": blobs.operating_system,
            "KernelVersion": blobs.kernel_version,
        },
        # serde_json::Value objects are BTreeMaps: their keys come out sorted.
        "DockerInfo": json.loads(json.dumps(inspect, sort_keys=True)),
        "CustomMetadata": json.loads(json.dumps(custom, sort_keys=True)),
    }
    kernel, cmdline = blobs.kernel, blobs.cmdline.encode()
    measurements = measure(kernel, cmdline, ramdisks, _certificate_der(signer))
    signature = None if signer is None else signer.sign_pcr0(measurements.pcr0)
    try:
        eif = build_eif(
            kernel=kernel, cmdline=cmdline, ramdisks=ramdisks, metadata=metadata, signature=signature
        )
    except EifError as exc:
        raise NitroCliError("E48", subaction=f"Failed to create EIF image: {exc}") from None
    return eif, measurements.to_json()


def _certificate_der(signer: EifSigner | None) -> bytes | None:
    if signer is None:
        return None
    return x509.load_pem_x509_certificate(signer.certificate_pem).public_bytes(Encoding.DER)


def build_enclave(args: argparse.Namespace) -> int:
    """``nitro-cli build-enclave``."""
    _say("Start building the Enclave Image...")
    try:
        eif, measurements = build_image(args, load_blobs())
    except NitroCliError as exc:
        raise exc.add_subaction("Failed to build EIF from docker") from None
    _write_atomically(args.output_file, eif)
    _say("Enclave Image successfully created.")
    print_json({"Measurements": measurements})
    return 0


def load_image(path: str, *, check_crc: bool = True) -> EifImage:
    """Read and parse the EIF at ``path``; E19 if it cannot be read, E35 if it is not a sound EIF."""
    data = _read(path, MAX_EIF_BYTES, "the EIF file")
    try:
        return read_eif(data, check_crc=check_crc)
    except EifError as exc:
        _say(f"{path}: {exc}")
        raise NitroCliError("E35", subaction=f"Failed to initialize EIF reader: {exc}") from None


def _certificate_info(image: EifImage) -> dict[str, str | dict[str, str]]:
    """``SignCertificateInfo``: issuer (OpenSSL long names), algorithm, validity and signature bytes."""
    certificate = decode_signature_section(image.signature or b"")[0].certificate()
    issuer = {attr.oid._name: str(attr.value) for attr in certificate.issuer}  # OpenSSL's long names
    algorithm = certificate.signature_algorithm_oid._name
    return {
        "IssuerName": dict(sorted(issuer.items())),
        "Algorithm": algorithm,
        "NotBefore": _asn1_time(certificate.not_valid_before_utc),
        "NotAfter": _asn1_time(certificate.not_valid_after_utc),
        "Signature": ":".join(f"{b:02X}" for b in certificate.signature),
    }


def _asn1_time(at: datetime) -> str:
    """OpenSSL's ASN1_TIME_print form, as nitro-cli shows it: ``Jan  1 00:00:00 2026 GMT``."""
    return f"{at:%b} {at.day:2d} {at:%H:%M:%S %Y} GMT"


def describe(image: EifImage) -> dict[str, Any]:
    """``EifDescribeInfo`` for ``image`` (key order as the struct; optional keys only when present)."""
    info: dict[str, Any] = {"EifVersion": image.version, "Measurements": image.measurements.to_json()}
    info["IsSigned"] = image.signature is not None
    if image.signature is not None:
        info["SigningCertificate"] = _certificate_info(image)
    info["CheckCRC"] = image.crc_ok
    if image.signature is not None:
        info["SignatureCheck"] = signature_matches(image)
    name, version = image_identity(image.metadata)
    described = metadata_describe_info(image.metadata)
    if described is not None:
        info["ImageName"] = name
        info["ImageVersion"] = version
        info["Metadata"] = described
    return info


def describe_eif(args: argparse.Namespace) -> int:
    """``nitro-cli describe-eif``: measurements recomputed, CRC and signature checked, metadata shown."""
    try:
        image = load_image(args.eif_path, check_crc=False)
        info = describe(image)
    except EifError as exc:
        raise NitroCliError("E35", subaction=f"Failed to get certificate sigining info: {exc}") from None
    print_json(info)
    return 0


def pcr(args: argparse.Namespace) -> int:
    """``nitro-cli pcr --input FILE`` ({"PCR": ...}) or ``--signing-certificate PEM`` ({"PCR8": ...})."""
    if args.signing_certificate is not None:
        pem = _read(args.signing_certificate, MAX_PEM_FILE_BYTES, "the certificate file")
        try:
            der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
        except ValueError:
            raise NitroCliError(
                "E57", subaction="Failed to deserialize .pem: not a PEM certificate"
            ) from None
        print_json({"PCR8": pcr_of(der).hex()})
        return 0
    data = _read(args.input, MAX_PCR_INPUT_BYTES, "the input file")
    print_json({"PCR": pcr_of(data).hex()})
    return 0


def sign_eif(args: argparse.Namespace) -> int:
    """``nitro-cli sign-eif``: add or replace the PCR0 signature, rewrite the CRC, print the measurements."""
    signer = _signer(args.signing_certificate, args.private_key)
    if signer is None:
        raise NitroCliError("E60", subaction="Failed to create EifSigner")
    image = load_image(args.eif_path)
    try:
        signed = replace_signature(image, signer.sign_pcr0(image.measurements.pcr0))
    except EifError as exc:
        raise NitroCliError("E60", subaction=f"Failed to sign image: {exc}") from None
    _write_atomically(args.eif_path, signed)
    _say("Enclave Image successfully signed.")
    print_json({"Measurements": load_image(args.eif_path).measurements.to_json()})
    return 0
