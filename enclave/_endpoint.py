"""Where the KMS client's requests go and whether over TLS: ``endpoint_url``, the TLS rules, the CA bundle.

Separate from :mod:`enclave.kms` because it is configuration, settled once in :func:`enclave.kms.client`
before a client exists: it reads the environment and the simulation home, never the connection. The client
(:class:`enclave.kms.KMSClient`) only receives the resulting :class:`enclave._connection.Endpoint` and
``ssl.SSLContext``.

The TLS rules (first that applies wins) are stated in :mod:`enclave.kms`'s docstring; :func:`resolve_tls`
applies them in that order, each block tagged with its rule's number.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path

from attestation.sim import sim_home
from enclave import vsock
from enclave._connection import ENV_KMS_TLS, Endpoint

__all__ = [
    "MAX_TCP_PORT",
    "SIM_CA_FILE",
    "build_endpoint",
    "default_ssl_context",
    "resolve_tls",
    "tls_from_environment",
]

#: kms-sim's CA certificate for ``--tls`` (under ``$NITRO_SIM_HOME``).
SIM_CA_FILE = Path("kms") / "tls" / "ca.pem"
#: TCP ports are u16.
MAX_TCP_PORT = 0xFFFF


def tls_from_environment(environ: Mapping[str, str] | None = None) -> bool | None:
    """Rule 3: ``NITRO_SIM_KMS_TLS`` as a bool, None when unset or empty; ValueError for another value."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_KMS_TLS, "")
    if not value:
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{ENV_KMS_TLS} must be 0 (plain HTTP) or 1 (TLS), got {value[:32]!r}")
    return value == "1"


def resolve_tls(
    use_ssl: bool | None, endpoint_url: str | None, *, simulated: bool, environ: Mapping[str, str] | None
) -> bool:
    """Whether to use TLS, by the rules of :mod:`enclave.kms`'s docstring, in order."""
    # (1) use_ssl given explicitly
    if use_ssl is not None:
        return use_ssl
    # (2) the endpoint's scheme
    if endpoint_url is not None and endpoint_url.startswith(("http://", "https://")):
        return endpoint_url.startswith("https://")
    # (3) NITRO_SIM_KMS_TLS
    from_environment = tls_from_environment(environ)
    if from_environment is not None:
        return from_environment
    # (4) TLS outside simulation; in simulation exactly when kms-sim's CA file exists
    return not simulated or (sim_home(environ) / SIM_CA_FILE).exists()


def default_ssl_context(ca_file: Path | None, *, simulated: bool) -> ssl.SSLContext:
    """A TLS client context trusting ``ca_file`` (kms-sim's CA in simulation) or the system roots."""
    if ca_file is None and simulated:
        ca_file = sim_home() / SIM_CA_FILE
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:  # no file, or not PEM certificates: one line, no traceback
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        hint = f" (without kms-sim --tls, set {ENV_KMS_TLS}=0)" if simulated else ""
        raise ValueError(f"cannot use the CA bundle {ca_file} for TLS: {reason}{hint}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def build_endpoint(endpoint_url: str | None, *, region: str, proxy_port: int, tls: bool) -> Endpoint:
    """Parse ``endpoint_url`` (``http(s)://HOST:PORT`` or ``vsock://CID:PORT``) or default to the proxy."""
    server_name = f"kms.{region}.amazonaws.com"
    if endpoint_url is None:
        return Endpoint(
            scheme="vsock", host="", cid=vsock.PARENT_CID, port=proxy_port, tls=tls, server_name=server_name
        )
    scheme, sep, rest = endpoint_url.partition("://")
    host, _, port_text = rest.rstrip("/").rpartition(":")
    limit = vsock.MAX_PORT if scheme == "vsock" else MAX_TCP_PORT
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) <= limit:
        raise ValueError(
            f"endpoint_url must be http(s)://HOST:PORT or vsock://CID:PORT, got {endpoint_url!r}"
        )
    port = int(port_text)
    if scheme == "vsock":
        if not host.isdigit():
            raise ValueError("a vsock endpoint needs a numeric CID")
        return Endpoint(scheme="vsock", host="", cid=int(host), port=port, tls=tls, server_name=server_name)
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported endpoint scheme {scheme!r}")
    return Endpoint(
        scheme="tcp", host=host.strip("[]"), port=port, tls=scheme == "https", server_name=server_name
    )
