"""kms-sim's state under ``$NITRO_SIM_HOME/kms``: layout, first-start creation, credentials.

Layout (DESIGN.md "Credentials"; interfaces.md "KMS wire")::

    kms/credentials      AWS shared-credentials file, profile ``nitro-sim`` (mode 0600)
    kms/config           AWS config file: ``[profile nitro-sim]`` region us-east-1
    kms/policy.json      per-principal IAM-style policies (default: nitro-sim may do every kms action)
    kms/keystores.db     custom key stores (SQLite, WAL, synchronous=FULL)
    kms/keys.db          KMS keys, their material and policies, and aliases (SQLite, mode 0600)
    kms/audit.jsonl      one CloudTrail-shaped event per request
    kms/faults.json      optional: faults to inject at run time, ``{"KMSInternalException": 2}`` (kms.server)
    kms/tls/             CA and server certificate for ``--tls``

Every profile in the credentials file is a principal: an IAM user of that name in the simulated account.
A profile with ``aws_session_token`` (or the legacy ``aws_security_token``, which botocore reads first)
holds temporary credentials: its requests must carry that token (kms.auth). Files are created only when
missing, so an operator's edits survive restarts.
"""

from __future__ import annotations

import configparser
import json
import os
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from attestation.errors import SimulationError

__all__ = [
    "ACCOUNT_ID",
    "DEFAULT_PROFILE",
    "DEFAULT_REGION",
    "KMSHome",
    "Principal",
    "ensure_home",
    "load_principals",
]

#: The simulated AWS account (AWS documentation's example account ID).
ACCOUNT_ID = "111122223333"
DEFAULT_PROFILE = "nitro-sim"
DEFAULT_REGION = "us-east-1"
#: Bound on the number of principals (profiles) read from the credentials file.
MAX_PRINCIPALS = 1000
#: Bound on the credentials file's size (a profile is ~120 bytes: MAX_PRINCIPALS of them fit many times).
MAX_CREDENTIALS_FILE_BYTES = 1024 * 1024

_KEY_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """An IAM user of the simulated account, as the credentials file defines it."""

    name: str
    access_key: str
    secret_key: str
    session_token: str | None = None

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{ACCOUNT_ID}:user/{self.name}"

    @property
    def principal_id(self) -> str:
        """A stable IAM unique ID (``AIDA…``), derived from the access key's suffix."""
        return "AIDA" + self.access_key[4:].ljust(17, "X")[:17]


@dataclass(frozen=True, slots=True, kw_only=True)
class KMSHome:
    """Paths of kms-sim's state directory."""

    root: Path

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def policy(self) -> Path:
        return self.root / "policy.json"

    @property
    def keystores(self) -> Path:
        return self.root / "keystores.db"

    @property
    def keys(self) -> Path:
        return self.root / "keys.db"

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def faults(self) -> Path:
        return self.root / "faults.json"

    @property
    def tls(self) -> Path:
        return self.root / "tls"


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` atomically with ``mode`` unless it exists (first start wins; edits are kept)."""
    if path.exists():
        return
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temp, path)  # fails if another process created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        temp.unlink()


def default_policy() -> dict[str, object]:
    """The first-start policy: the ``nitro-sim`` principal may call every kms action."""
    return {
        DEFAULT_PROFILE: {
            "Version": "2012-10-17",
            "Statement": [{"Sid": "AllowAll", "Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
        }
    }


def ensure_home(sim_home: Path) -> KMSHome:
    """Create ``<sim_home>/kms`` and its credentials, config and policy files if missing."""
    home = KMSHome(root=sim_home / "kms")
    try:
        home.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        access_key = "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
        secret_key = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        _write_new(
            home.credentials,
            f"[{DEFAULT_PROFILE}]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n",
            0o600,
        )
        _write_new(home.config, f"[profile {DEFAULT_PROFILE}]\nregion = {DEFAULT_REGION}\n", 0o644)
        _write_new(home.policy, json.dumps(default_policy(), indent=2) + "\n", 0o644)
    except OSError as error:
        raise SimulationError(f"cannot create kms-sim state in {home.root}: {error}") from None
    return home


def _unreadable(error: Exception) -> str:
    """Why a credentials file did not load, in one line that never quotes the file.

    configparser's own messages quote the offending line, and in a credentials file that line may hold a
    secret access key: the line number is all this says of where.
    """
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start})"
    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"line {error.lineno} comes before any [profile] header"
    if isinstance(error, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _ in error.errors[:5])
        return f"not 'name = value' at line(s) {lines}"
    if isinstance(error, configparser.DuplicateSectionError | configparser.DuplicateOptionError):
        return f"something is defined twice (line {error.lineno})"
    return "not a shared-credentials (INI) file"


def load_principals(path: Path) -> Mapping[str, Principal]:
    """Every profile of a shared-credentials file, by access key ID; SimulationError if unusable."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open("rb") as handle:  # bounded: the path may be /dev/zero or a FIFO
            data = handle.read(MAX_CREDENTIALS_FILE_BYTES + 1)
        if len(data) > MAX_CREDENTIALS_FILE_BYTES:
            raise SimulationError(f"credentials file {path} is over {MAX_CREDENTIALS_FILE_BYTES} bytes")
        parser.read_string(data.decode("utf-8"), source=str(path))
    except (OSError, configparser.Error, UnicodeDecodeError) as error:
        raise SimulationError(f"cannot read credentials file {path}: {_unreadable(error)}") from None
    principals: dict[str, Principal] = {}
    for name in parser.sections()[:MAX_PRINCIPALS]:
        section = parser[name]
        access_key = section.get("aws_access_key_id", "").strip()
        secret_key = section.get("aws_secret_access_key", "").strip()
        if not access_key or not secret_key:
            raise SimulationError(f"credentials file {path}: profile [{name}] lacks a key ID or secret")
        # Temporary credentials: as botocore reads them, the legacy name if present, else aws_session_token.
        raw_token = section.get("aws_security_token")
        if raw_token is None:
            raw_token = section.get("aws_session_token", "")
        token = raw_token.strip() or None
        principals[access_key] = Principal(
            name=name, access_key=access_key, secret_key=secret_key, session_token=token
        )
    if not principals:
        raise SimulationError(f"credentials file {path} has no profiles")
    return principals
