"""Client configuration: credentials, region, timeouts and retries, resolved the way AWS SDKs do.

Credentials, first found wins: explicit arguments; ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``; the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE`` or ``~/.aws/credentials``,
profile ``AWS_PROFILE`` or ``default``); in simulation, kms-sim's ``$NITRO_SIM_HOME/kms/credentials``,
profile ``nitro-sim``. Region: explicit, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, else ``us-east-1``
(kmstool-enclave-cli's default). Secrets never appear in a repr or a message.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from attestation.sim import sim_home
from enclave._retry import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT
from enclave.errors import CredentialsError

__all__ = ["Config", "Credentials", "resolve_credentials", "resolve_region"]

DEFAULT_REGION = "us-east-1"
#: kms-sim's profile in its credentials file (interfaces.md, "KMS wire").
SIM_PROFILE = "nitro-sim"
#: botocore's defaults (seconds).
DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_READ_TIMEOUT = 60.0
#: Bound on a credentials file we read.
MAX_CREDENTIALS_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """AWS credentials; the secret and token are kept out of ``repr``."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.access_key or not self.secret_key:
            raise CredentialsError("an access key ID and a secret access key are both required")
        if any(c in self.access_key for c in "/ \r\n") or "\n" in self.secret_key:
            raise CredentialsError("the access key ID is malformed")
        if self.token is not None and ("\r" in self.token or "\n" in self.token):
            raise CredentialsError("the session token is malformed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Timeouts and retries, named as botocore's ``Config`` (``retries={"max_attempts": N}``)."""

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retries: Mapping[str, object] | None = None

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        mode = (self.retries or {}).get("mode", "standard")
        if mode != "standard":
            raise ValueError(f"only the 'standard' retry mode is supported, not {mode!r}")
        attempts = self.max_attempts
        if not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"retries max_attempts must be in 1..{MAX_ATTEMPTS_LIMIT}")

    @property
    def max_attempts(self) -> int:
        """Total attempts per call (first try included)."""
        value = (self.retries or {}).get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("retries max_attempts must be an integer")
        return value


def _from_file(path: Path, profile: str) -> Credentials | None:
    try:
        with path.open(encoding="utf-8") as f:
            text = f.read(MAX_CREDENTIALS_FILE_BYTES)
    except OSError:
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        raise CredentialsError(f"the credentials file {path} is not in INI format") from None
    if not parser.has_section(profile):
        return None
    section = parser[profile]
    access, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if not access or not secret:
        return None
    return Credentials(access_key=access, secret_key=secret, token=section.get("aws_session_token"))


def resolve_credentials(
    access_key: str | None = None,
    secret_key: str | None = None,
    token: str | None = None,
    *,
    simulated: bool,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """Find credentials in the order of the module docstring; raise CredentialsError if there are none."""
    env = os.environ if environ is None else environ
    if access_key or secret_key:
        if not (access_key and secret_key):
            raise CredentialsError("both an access key ID and a secret access key must be given")
        return Credentials(access_key=access_key, secret_key=secret_key, token=token or None)
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=env["AWS_SECRET_ACCESS_KEY"],
            token=env.get("AWS_SESSION_TOKEN") or None,
        )
    shared = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials").expanduser()
    found = _from_file(shared, env.get("AWS_PROFILE") or "default")
    if found is not None:
        return found
    if simulated:
        found = _from_file(sim_home(env) / "kms" / "credentials", SIM_PROFILE)
        if found is not None:
            return found
    raise CredentialsError("Unable to locate credentials")


def resolve_region(region_name: str | None = None, *, environ: Mapping[str, str] | None = None) -> str:
    """The region: explicit, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, else us-east-1."""
    env = os.environ if environ is None else environ
    region = region_name or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    if not region.replace("-", "").isalnum() or len(region) > 64:
        raise ValueError(f"invalid region name {region[:64]!r}")
    return region
