"""Client configuration: credentials, region, timeouts and retries, resolved the way AWS SDKs do.

Credentials, first found wins: explicit arguments; ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``; the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE`` or ``~/.aws/credentials``,
profile ``AWS_PROFILE`` or ``default``); in simulation, kms-sim's ``$NITRO_SIM_HOME/kms/credentials``,
profile ``AWS_PROFILE`` or ``nitro-sim``. Region: explicit, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, else
``us-east-1`` (kmstool-enclave-cli's default). Secrets never appear in a repr or a message.

Errors as botocore raises them (``botocore/session.py``, ``credentials.py``, ``configprovider.py``), with
its texts, checked before anything is sent:

- ``AWS_PROFILE`` set (even to ``default`` or empty) to a profile that neither the credentials file, the
  config file (``AWS_CONFIG_FILE`` or ``~/.aws/config``, ``[profile NAME]``) nor, in simulation, kms-sim's
  credentials file defines: ProfileNotFound "The config profile (NAME) could not be found", even when
  credentials are given explicitly.
- One of an explicit key pair: PartialCredentialsError "Partial credentials found in explicit, missing:
  aws_secret_access_key"; ``AWS_ACCESS_KEY_ID`` without ``AWS_SECRET_ACCESS_KEY``: "Partial credentials
  found in env, missing: AWS_SECRET_ACCESS_KEY" (a secret alone in the environment is ignored, as there).
- Retries as botocore counts them (``botocore/args.py``, ``_compute_retry_max_attempts``):
  ``Config(retries={"total_max_attempts": N})`` is N attempts in all; ``{"max_attempts": N}`` is N
  *retries*, N + 1 attempts (botocore's older key; ``total_max_attempts`` wins when both are given);
  ``AWS_MAX_ATTEMPTS`` is total attempts, used when ``retries`` sets neither. Any other key of ``retries``:
  ValueError 'Cannot provide retry configuration for "KEY". Valid retry configuration options are: ...';
  ``max_attempts`` below 0 or ``total_max_attempts`` below 1: ValueError 'Value provided to "max_attempts":
  -1 must be an integer greater than or equal to 0.' (1 for the total); an ``AWS_MAX_ATTEMPTS`` that is not
  an integer: ValueError "invalid literal for int() with base 10: 'abc'"; more than MAX_ATTEMPTS_LIMIT
  attempts in all: ValueError.

Timeouts: ``connect_timeout`` and ``read_timeout`` are botocore's (60 s each; a read timeout bounds each
wait for bytes, so a peer that sends one byte just inside it could stretch an answer without end).
``attempt_timeout`` is ours, not botocore's: the bound on one whole attempt (connect, TLS handshake, send
and the complete response), the AWS SDK for Kotlin's ``attemptTimeout`` and the Java SDK v2's
``apiCallAttemptTimeout``. Unset, it is ``connect_timeout + read_timeout`` (120 s by default): an honest
KMS answer (under 9 KB, at most a few reads) comes within ``read_timeout`` of the request and a connection
within ``connect_timeout``, so this default never cuts a call botocore's own timeouts let through, while a
dripping peer gets no more than that. Exceeding it raises ConnectTimeoutError while connecting, else
ReadTimeoutError, retried as botocore retries timeouts (enclave._retry).
"""

from __future__ import annotations

import configparser
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from attestation.sim import sim_home
from enclave._retry import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT
from enclave.errors import CredentialsError, PartialCredentialsError, ProfileNotFound

__all__ = ["Config", "Credentials", "resolve_config", "resolve_credentials", "resolve_region"]

DEFAULT_REGION = "us-east-1"
#: The keys of ``Config.retries`` botocore accepts (``botocore/config.py``, its retry validation).
_RETRY_OPTIONS = ("max_attempts", "mode", "total_max_attempts")
#: kms-sim's profile in its credentials file (interfaces.md, "KMS wire").
SIM_PROFILE = "nitro-sim"
#: botocore's defaults (seconds).
DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_READ_TIMEOUT = 60.0
#: Bound on either timeout (seconds).
MAX_TIMEOUT_SECONDS = 3600.0
#: The environment variables botocore reads for these settings.
ENV_PROFILE = "AWS_PROFILE"
ENV_MAX_ATTEMPTS = "AWS_MAX_ATTEMPTS"
ENV_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name, not a secret
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
    """Timeouts and retries, named and counted as botocore's ``Config`` (``retries`` keys included)."""

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retries: Mapping[str, object] | None = None
    #: Bound on one attempt, connect to the last response byte (module docstring); None: connect + read.
    attempt_timeout: float | None = None

    def __post_init__(self) -> None:
        timeouts = [self.connect_timeout, self.read_timeout]
        if self.attempt_timeout is not None:
            timeouts.append(self.attempt_timeout)
        for timeout in timeouts:
            # finite: settimeout() refuses NaN (and the NaN would pass a "<= 0" check)
            if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_SECONDS):
                raise ValueError(
                    f"timeouts must be positive numbers of seconds up to {MAX_TIMEOUT_SECONDS:.0f}"
                )
        retries = self.retries or {}
        for key in retries:
            if key not in _RETRY_OPTIONS:
                raise ValueError(
                    f'Cannot provide retry configuration for "{key}". '
                    f"Valid retry configuration options are: {_RETRY_OPTIONS}"
                )
        mode = retries.get("mode", "standard")
        if mode != "standard":
            raise ValueError(f"only the 'standard' retry mode is supported, not {mode!r}")
        for key, least in (("max_attempts", 0), ("total_max_attempts", 1)):
            value = retries.get(key, least)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"retries {key} must be an integer")
            if value < least:
                raise ValueError(
                    f'Value provided to "max_attempts": {value} must be an integer greater than or equal to '
                    f"{least}."
                )
        if self.max_attempts > MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"retries allow at most {MAX_ATTEMPTS_LIMIT} attempts in all")

    @property
    def attempt_seconds(self) -> float:
        """The bound on one attempt: ``attempt_timeout``, else ``connect_timeout + read_timeout``."""
        if self.attempt_timeout is not None:
            return self.attempt_timeout
        return self.connect_timeout + self.read_timeout

    @property
    def max_attempts(self) -> int:
        """Total attempts per call (first try included), counted as botocore counts them."""
        retries = self.retries or {}
        total = retries.get("total_max_attempts")
        if isinstance(total, int):
            return total
        retry_count = retries.get("max_attempts")
        if isinstance(retry_count, int):
            return retry_count + 1  # botocore: "client config max_attempts means total retries"
        return DEFAULT_MAX_ATTEMPTS


def _read_ini(path: Path) -> configparser.ConfigParser | None:
    """The parsed INI file, or None if it cannot be read (a missing file is no error, as in botocore)."""
    try:
        with path.open(encoding="utf-8") as f:
            text = f.read(MAX_CREDENTIALS_FILE_BYTES)
    except (OSError, UnicodeDecodeError):
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        raise CredentialsError(f"the credentials file {path} is not in INI format") from None
    return parser


def _from_ini(parser: configparser.ConfigParser | None, profile: str) -> Credentials | None:
    if parser is None or not parser.has_section(profile):
        return None
    section = parser[profile]
    access, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if not access or not secret:
        return None
    return Credentials(access_key=access, secret_key=secret, token=section.get("aws_session_token"))


def _profile_defined(
    profile: str,
    credentials_file: configparser.ConfigParser | None,
    config_file: configparser.ConfigParser | None,
    sim_file: configparser.ConfigParser | None,
) -> bool:
    # botocore: the profiles of the credentials file ("[NAME]") and of the config file ("[profile NAME]",
    # and "[default]" for the default profile).
    config_names = {f"profile {profile}"} | ({"default"} if profile == "default" else set())
    return any(p is not None and p.has_section(profile) for p in (credentials_file, sim_file)) or (
        config_file is not None and any(config_file.has_section(name) for name in config_names)
    )


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
    shared = _read_ini(Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials").expanduser())
    sim_file = _read_ini(sim_home(env) / "kms" / "credentials") if simulated else None
    # (1) a named profile must exist somewhere, whatever supplies the credentials (botocore checks it
    # when the client is made)
    profile = env.get(ENV_PROFILE)
    if profile is not None:
        config_file = _read_ini(Path(env.get("AWS_CONFIG_FILE") or "~/.aws/config").expanduser())
        if not _profile_defined(profile, shared, config_file, sim_file):
            raise ProfileNotFound(profile)
    # (2) explicit arguments
    if access_key or secret_key:
        if not secret_key:
            raise PartialCredentialsError("explicit", "aws_secret_access_key")
        if not access_key:
            raise PartialCredentialsError("explicit", "aws_access_key_id")
        return Credentials(access_key=access_key, secret_key=secret_key, token=token or None)
    # (3) the environment: a key ID there means the pair must be complete
    if env.get(ENV_ACCESS_KEY_ID):
        if not env.get(ENV_SECRET_ACCESS_KEY):
            raise PartialCredentialsError("env", ENV_SECRET_ACCESS_KEY)
        return Credentials(
            access_key=env[ENV_ACCESS_KEY_ID],
            secret_key=env[ENV_SECRET_ACCESS_KEY],
            token=env.get("AWS_SESSION_TOKEN") or None,
        )
    # (4) the shared credentials file, then (5) kms-sim's in simulation
    found = _from_ini(shared, profile if profile is not None else "default")
    if found is None:
        found = _from_ini(sim_file, profile if profile is not None else SIM_PROFILE)
    if found is None:
        raise CredentialsError("Unable to locate credentials")
    return found


def resolve_config(config: Config | None = None, *, environ: Mapping[str, str] | None = None) -> Config:
    """``config`` (or the defaults) with ``AWS_MAX_ATTEMPTS`` (attempts in all) used if it sets no count."""
    config = config or Config()
    env = os.environ if environ is None else environ
    text = env.get(ENV_MAX_ATTEMPTS)
    if text is None or {"max_attempts", "total_max_attempts"} & set(config.retries or {}):
        return config
    attempts = int(text)  # botocore's conversion: "invalid literal for int() with base 10: 'abc'"
    if attempts < 1:
        raise ValueError(
            f'Value provided to "max_attempts": {attempts} must be an integer greater than or equal to 1.'
        )
    return replace(config, retries={**(config.retries or {}), "total_max_attempts": attempts})


def resolve_region(region_name: str | None = None, *, environ: Mapping[str, str] | None = None) -> str:
    """The region: explicit, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, else us-east-1."""
    env = os.environ if environ is None else environ
    region = region_name or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    if not region.replace("-", "").isalnum() or len(region) > 64:
        raise ValueError(f"invalid region name {region[:64]!r}")
    return region
