"""SigV4 step 1, the canonical request: what the signer (enclave) and the verifier (kms) both sign over.

Split from :mod:`attestation.sigv4` along the spec's own seam: this part only normalizes a request into the
canonical string (URI, query, header block, payload hash); the keys, HMACs, the ``Authorization`` header and
its parser stay there. Every public name here is re-exported by :mod:`attestation.sigv4`, which is where
callers import them; the rules followed (and where they follow botocore) are in that module's docstring.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote

from attestation.errors import MalformedError

#: hex(SHA256(b"")), the payload hash of an empty body.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Headers never signed: they may be changed by proxies (botocore's ``SIGNED_HEADERS_BLACKLIST``).
UNSIGNED_HEADERS = frozenset(
    {
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)

#: Header items: a mapping, or (name, value) pairs when a name repeats.
Headers = Mapping[str, str] | Iterable[tuple[str, str]]


class MalformedAuthorizationError(MalformedError, ValueError):
    """An ``Authorization`` (or ``X-Amz-Date``) header is not in the SigV4 shape; the message is one line."""


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path; the result keeps a trailing slash and is never empty."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment not in (".", ""):
            out.append(segment)
    result = "/" + "/".join(out)
    if path.endswith(("/", "/.", "/..")) and result != "/":
        result += "/"
    return result


def canonical_uri(path: str) -> str:
    """The canonical URI of a request path as sent on the wire (e.g. ``/`` for every KMS call)."""
    return quote(_remove_dot_segments(path or "/"), safe="/~")


def canonical_query(query: str) -> str:
    """The canonical query string of a wire-form query (``a=1&b=2``): pairs sorted by name, then value."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        pairs.append((name, value))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _items(headers: Headers) -> Iterable[tuple[str, str]]:
    return headers.items() if isinstance(headers, Mapping) else headers


def headers_to_sign(headers: Headers) -> tuple[str, ...]:
    """The sorted, lower-case names of the headers a signer signs (all but :data:`UNSIGNED_HEADERS`)."""
    return tuple(sorted({name.lower() for name, _ in _items(headers)} - UNSIGNED_HEADERS))


def canonical_headers(headers: Headers, signed_headers: Sequence[str]) -> str:
    """The canonical header block for ``signed_headers`` (lower-case names), each line ending in ``\\n``.

    Values are trimmed and inner whitespace runs collapsed to one space (the spec's Trimall); a repeated
    header's values are joined with ``,`` in the order received. A signed header that is absent raises
    :class:`MalformedAuthorizationError` (a verifier must refuse to sign over a header it does not have).
    """
    wanted: dict[str, list[str]] = {name: [] for name in signed_headers}
    for name, value in _items(headers):
        bucket = wanted.get(name.lower())
        if bucket is not None:
            bucket.append(" ".join(value.split()))
    lines = []
    for name in sorted(wanted):
        values = wanted[name]
        if not values:
            raise MalformedAuthorizationError(f"signed header {name!r} is not in the request")
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def payload_hash(body: bytes) -> str:
    """hex(SHA256(body)), the last line of the canonical request."""
    return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Headers,
    *,
    signed_headers: Sequence[str],
    body_sha256: str,
) -> str:
    """Step 1: the canonical request string."""
    return "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            canonical_headers(headers, signed_headers),
            ";".join(sorted(signed_headers)),
            body_sha256,
        )
    )
