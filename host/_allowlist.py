"""vsock-proxy's allowlist: the real file format, the real check, the real messages.

Source: aws-nitro-enclaves-cli ``vsock_proxy/src/proxy.rs`` ``check_allowlist`` and ``src/dns.rs``. The file
is YAML with a top-level ``allowlist`` list of ``{address, port}``; the shipped file loads unchanged.

The check (once, at start):

1. Read and parse the file ("Could not open the file", "Could not read the file", "Bad yaml format",
   "No allowlist field").
2. For each entry in order: "No address field" / "No port field or invalid type" if malformed; skip it if
   the port differs; accept if the address string equals the remote host exactly; otherwise resolve the
   entry and accept if one of its IPs equals the remote host's IP.
3. Nothing matched: "The given address and port are not allowed".

Deliberate differences, none of which changes which destinations are accepted:

- The real proxy resolves the remote host before the loop; we resolve it only when a step needs an IP
  (an exact name match needs one to connect to; an IP comparison needs both). So a destination refused on
  its port is refused without any DNS lookup, and a test can exercise every refusal without resolving a
  name outside this machine.
- Step 2 runs in two passes: first every entry up to the first malformed one is checked by port and exact
  name, with no lookup; only if none matches are the port-matching entries resolved, in order. The
  outcome is the real loop's (a match before a malformed entry accepts; otherwise the malformed entry's
  error, else "not allowed"), but a name listed in the file costs no DNS lookup of the other entries.
- At most ``MAX_RESOLVED_ENTRIES`` entries are resolved per start; an allowlist that would need more for
  the given port is refused with a clear error before any lookup (the shipped file has 76 entries).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path

import yaml

__all__ = ["MAX_RESOLVED_ENTRIES", "AllowlistError", "check_allowlist", "system_resolve"]

#: Bound on the allowlist file we agree to read (the shipped one is ~5 KB).
MAX_ALLOWLIST_BYTES = 1024 * 1024
#: Bound on the allowlist entries resolved (DNS lookups) per start; above the shipped file's 76 entries.
MAX_RESOLVED_ENTRIES = 128

#: ``resolve(host, family) -> IP strings``; raises AllowlistError with the real message on failure.
Resolver = Callable[[str, int], list[str]]


class _AllowlistLoader(yaml.SafeLoader):
    """``SafeLoader`` without implicit timestamps: the real proxy's YAML (yaml-rust, YAML 1.2 core schema)
    reads ``2001-02-03`` as a string, and PyYAML's implicit date conversion raised ValueError (a traceback) on
    a date-shaped string that is not a date, e.g. ``2001-13-45``."""


_AllowlistLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class AllowlistError(Exception):
    """The allowlist check failed; the message is the real vsock-proxy's text."""


def system_resolve(host: str, family: int) -> list[str]:
    """Resolve ``host`` (name or IP literal) with the system resolver, like the real ``dns::resolve``."""
    if "\0" in host:
        # getaddrinfo would look up the name cut at the NUL ("127.0.0.1\0x" resolves as 127.0.0.1); the real
        # proxy cannot pass such a name to its resolver at all.
        raise AllowlistError("DNS lookup failed!")
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise AllowlistError("DNS lookup failed!") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise AllowlistError("DNS lookup returned no IP addresses!")
    return addresses


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def check_allowlist(
    remote_host: str,
    remote_port: int,
    config_file: Path,
    *,
    family: int = socket.AF_UNSPEC,
    resolve: Resolver = system_resolve,
) -> str:
    """Check the destination against the allowlist file; return the remote IP to connect to.

    Raises :class:`AllowlistError` with the real proxy's message.
    """
    # (1) read and parse
    try:
        with config_file.open("rb") as f:
            raw = f.read(MAX_ALLOWLIST_BYTES + 1)
    except OSError:
        raise AllowlistError("Could not open the file") from None
    if len(raw) > MAX_ALLOWLIST_BYTES:
        raise AllowlistError("Could not read the file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AllowlistError("Could not read the file") from None
    try:
        document = yaml.load(text, Loader=_AllowlistLoader)  # noqa: S506 (a SafeLoader subclass)
    except (yaml.YAMLError, ValueError, RecursionError):
        # ValueError: an explicit "!!timestamp 2001-13-45", an integer past int()'s 4300 digits;
        # RecursionError: nesting deeper than PyYAML's recursive composer can go.
        raise AllowlistError("Bad yaml format") from None
    services = document.get("allowlist") if isinstance(document, dict) else None
    if not isinstance(services, list):
        raise AllowlistError("No allowlist field")

    remote_ips: list[str] | None = None

    def remote_ip() -> str:
        nonlocal remote_ips
        if remote_ips is None:
            remote_ips = resolve(remote_host, family)
        return remote_ips[0]

    # (2a) entries in order, by port and exact name only (no lookup); stop at the first malformed entry
    to_resolve: list[str] = []
    malformed: AllowlistError | None = None
    for service in services:
        address = service.get("address") if isinstance(service, dict) else None
        if not isinstance(address, str):
            malformed = AllowlistError("No address field")
            break
        port = service.get("port")
        if not isinstance(port, int) or isinstance(port, bool):
            malformed = AllowlistError("No port field or invalid type")
            break
        # The real proxy casts the YAML integer to u16 ("port as u16").
        if port & 0xFFFF != remote_port:
            continue
        if address == remote_host:
            return remote_ip()
        to_resolve.append(address)
    # (2b) the port-matching entries before that point, by IP, within the bound
    if len(to_resolve) > MAX_RESOLVED_ENTRIES:
        raise AllowlistError(
            f"Too many allowlist entries to resolve for port {remote_port}: "
            f"{len(to_resolve)} (at most {MAX_RESOLVED_ENTRIES})"
        )
    for address in to_resolve:
        try:
            candidates = resolve(address, family)
        except AllowlistError:
            continue  # the real proxy skips entries that do not resolve
        target = remote_ip()
        if any(_same_ip(candidate, target) for candidate in candidates):
            return target
    if malformed is not None:
        raise malformed
    # (3)
    raise AllowlistError("The given address and port are not allowed")
