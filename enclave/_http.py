"""HTTP/1.1 for the KMS client, sans-IO: request bytes out, response events from bytes in (RFC 9112).

The client sends one request at a time on a persistent connection and reads exactly one response.
What the reader accepts:

- a status line ``HTTP/1.x SP 3DIGIT SP reason``; interim ``1xx`` responses are skipped;
- header fields ``name: value`` (obs-fold is refused, as RFC 9112 §5.2 allows a client to);
- a body framed by ``Transfer-Encoding: chunked`` (which wins, §6.3), else ``Content-Length`` (one value,
  or identical repeats), else by the connection closing (and then the connection is not reused);
- every size within :data:`MAX_HEAD_BYTES` / :data:`MAX_BODY_BYTES` (the trailer section, too, within
  :data:`MAX_HEAD_BYTES`), and at most :data:`MAX_INTERIM_RESPONSES` interim responses;
- sizes in ASCII digits only: ``Content-Length = 1*DIGIT``, ``chunk-size = 1*HEXDIG`` (RFC 9112 §6.2, §7.1;
  no ``0x``, sign or ``_`` that ``int()`` would take).

Anything else raises :class:`enclave.errors.ProtocolError` and the connection must be dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from enclave.errors import ProtocolError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "Response",
    "ResponseReader",
    "encode_header_fields",
    "encode_request_head",
]

#: Bound on a response's status line plus headers.
MAX_HEAD_BYTES = 16 * 1024
#: Bound on a response body. A GenerateRandom answer is < 9 KB (CiphertextForRecipient <= 6144 bytes in
#: base64); errors are small. Anything near this bound is not KMS.
MAX_BODY_BYTES = 1024 * 1024
#: Bound on the number of header fields in a response.
MAX_HEADER_FIELDS = 100
#: Bound on a chunk-size line (hex digits plus extensions).
MAX_CHUNK_LINE_BYTES = 1024
#: Bound on interim (1xx) responses before the final one (KMS sends none: we never send ``Expect``).
MAX_INTERIM_RESPONSES = 8

_CRLF = b"\r\n"
#: What ``bytes.strip()`` removes (ASCII whitespace); ``str.strip()`` would also remove e.g. U+0085, U+00A0.
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
_DIGITS = frozenset("0123456789")
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


def encode_header_fields(headers: Iterable[tuple[str, str]]) -> bytes:
    """``name: value`` lines, each ending in CRLF; names and values must not contain CR or LF."""
    lines = []
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} has a forbidden character")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def encode_request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The request line and header block, ending with the blank line."""
    return f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + encode_header_fields(headers) + b"\r\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """One complete HTTP response. Header names are lower-case, in the order received."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        key = name.lower()
        for field_name, value in self.headers:
            if field_name == key:
                return value
        return None


class ResponseReader:
    """Feed bytes with :meth:`feed` until it returns a :class:`Response`; call :meth:`eof` on close.

    Explicit state, fail closed: after a ProtocolError the reader stays failed.
    """

    __slots__ = (
        "_body",
        "_buf",
        "_chunk_left",
        "_failed",
        "_framing",
        "_head",
        "_interim",
        "_length",
        "_trailer_bytes",
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[int, str, tuple[tuple[str, str], ...], bool] | None = None
        self._framing = ""  # "length", "chunked" or "close"
        self._length = 0
        self._body = bytearray()
        self._chunk_left = -1  # -1: expecting a chunk-size line
        self._failed = False
        self._interim = 0  # interim (1xx) responses skipped so far
        self._trailer_bytes = 0  # trailer section bytes skipped so far

    def _fail(self, message: str) -> ProtocolError:
        self._failed = True
        return ProtocolError(message)

    def feed(self, data: bytes | bytearray | memoryview) -> Response | None:
        """Add received bytes; return the response once complete, else None."""
        if self._failed:
            raise ProtocolError("the response reader already failed")
        self._buf += data
        while self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise self._fail(f"response head is over {MAX_HEAD_BYTES} bytes")
                return None
            if end > MAX_HEAD_BYTES:
                raise self._fail(f"response head is over {MAX_HEAD_BYTES} bytes")
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            parsed = self._parse_head(head)
            if parsed is not None:
                self._head = parsed
            else:
                self._interim += 1
                if self._interim > MAX_INTERIM_RESPONSES:
                    raise self._fail(f"response has over {MAX_INTERIM_RESPONSES} interim (1xx) responses")
        return self._body_progress()

    def eof(self) -> Response | None:
        """The peer closed: complete a close-framed body, return None if nothing was received, or raise."""
        if self._failed:
            raise ProtocolError("the response reader already failed")
        if self._head is None and not self._buf:
            return None
        if self._head is not None and self._framing == "close":
            self._body += self._buf
            self._buf.clear()
            return self._finish(keep_alive=False)
        raise self._fail("connection closed in the middle of a response")

    @property
    def started(self) -> bool:
        """True once any byte of a response has arrived (then a request must not be silently retried)."""
        return bool(self._buf) or self._head is not None

    # -- head ----------------------------------------------------------------------------------------------

    def _parse_head(self, head: bytes) -> tuple[int, str, tuple[tuple[str, str], ...], bool] | None:
        status_line, sep, fields = head.partition(_CRLF)
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise self._fail("response does not start with an HTTP/1.1 status line")
        if len(parts[1]) != 3 or not parts[1].isdigit():
            raise self._fail("response status code is not three digits")
        status = int(parts[1])
        reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
        # The field block is decoded once (latin-1 maps each byte to one code point, so the str checks
        # below mean what the former per-field bytes checks meant; strips name ASCII whitespace only).
        lines = fields.decode("latin-1").split("\r\n") if sep else []
        if len(lines) > MAX_HEADER_FIELDS:
            raise self._fail(f"response has over {MAX_HEADER_FIELDS} header fields")
        # One pass over the fields: collect the three that frame the message as we go (same checks, same
        # order of errors as separate passes, since the framing checks all come after the loop).
        headers = []
        connection: list[str] = []
        encodings: list[str] = []
        lengths: set[str] = set()
        for line in lines:
            if line[:1] in (" ", "\t"):
                raise self._fail("response uses obsolete header line folding")
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip(_ASCII_WHITESPACE):
                raise self._fail("response has a malformed header field")
            field = name.lower()
            text = value.strip(" \t")
            headers.append((field, text))
            if field == "content-length":
                lengths.add(text)  # already OWS-stripped; str.strip() would also take "\x85", "\xa0"
            elif field == "connection":
                connection.append(text)
            elif field == "transfer-encoding":
                encodings.extend(v.strip(" \t").lower() for v in text.split(","))
        if 100 <= status < 200:
            return None  # interim response (e.g. 100 Continue): the real one follows
        http10 = parts[0] == b"HTTP/1.0"
        joined = ",".join(connection).lower()
        keep_alive = ("keep-alive" in joined) if http10 else ("close" not in joined)
        if encodings:
            if encodings[-1] != "chunked":
                raise self._fail("response transfer-encoding is not chunked")
            self._framing = "chunked"
        elif lengths:
            if len(lengths) != 1:
                raise self._fail("response has conflicting Content-Length values")
            (length_text,) = lengths
            significant = length_text.lstrip("0") or "0"
            if (
                not length_text
                or not _DIGITS.issuperset(length_text)  # str.isdigit() takes e.g. "\xb2" ("²")
                or len(significant) > len(str(MAX_BODY_BYTES))  # int() refuses over 4300 digits
                or int(significant) > MAX_BODY_BYTES
            ):
                raise self._fail(f"response Content-Length is invalid or over {MAX_BODY_BYTES}")
            self._framing = "length"
            self._length = int(significant)
        elif status in (204, 304):
            self._framing = "length"
            self._length = 0
        else:
            self._framing = "close"
            keep_alive = False
        return status, reason, tuple(headers), keep_alive

    # -- body ----------------------------------------------------------------------------------------------

    def _body_progress(self) -> Response | None:
        if self._framing == "length":
            if len(self._buf) < self._length:
                return None
            if len(self._buf) > self._length:
                raise self._fail("bytes after the response body (we never pipeline)")
            self._body = self._buf
            self._buf = bytearray()
            return self._finish()
        if self._framing == "close":
            if len(self._buf) > MAX_BODY_BYTES:
                raise self._fail(f"response body is over {MAX_BODY_BYTES} bytes")
            return None
        return self._chunked_progress()

    def _chunked_progress(self) -> Response | None:
        while True:
            if self._chunk_left == -1:
                end = self._buf.find(_CRLF)
                if end < 0:
                    if len(self._buf) > MAX_CHUNK_LINE_BYTES:
                        raise self._fail("chunk-size line is too long")
                    return None
                if end > MAX_CHUNK_LINE_BYTES:
                    raise self._fail("chunk-size line is too long")
                size_text = bytes(self._buf[:end]).split(b";", 1)[0].strip()
                if not size_text or not _HEXDIGITS.issuperset(size_text):
                    raise self._fail("chunk size is not hexadecimal")
                size = int(size_text, 16)
                if len(self._body) + size > MAX_BODY_BYTES:
                    raise self._fail(f"response body is over {MAX_BODY_BYTES} bytes")
                del self._buf[: end + 2]
                if size == 0:
                    self._chunk_left = -2  # trailers follow
                else:
                    self._chunk_left = size
            if self._chunk_left == -2:
                end = self._buf.find(_CRLF)
                while end > 0:  # skip trailer fields
                    self._trailer_bytes += end + 2
                    if self._trailer_bytes > MAX_HEAD_BYTES:
                        raise self._fail(f"response trailer section is over {MAX_HEAD_BYTES} bytes")
                    del self._buf[: end + 2]
                    end = self._buf.find(_CRLF)
                if end < 0:
                    if self._trailer_bytes + len(self._buf) > MAX_HEAD_BYTES:
                        raise self._fail(f"response trailer section is over {MAX_HEAD_BYTES} bytes")
                    return None
                del self._buf[:2]
                if self._buf:
                    raise self._fail("bytes after the response body (we never pipeline)")
                return self._finish()
            if len(self._buf) < self._chunk_left + 2:
                return None
            if self._buf[self._chunk_left : self._chunk_left + 2] != _CRLF:
                raise self._fail("chunk is not followed by CRLF")
            self._body += self._buf[: self._chunk_left]
            del self._buf[: self._chunk_left + 2]
            self._chunk_left = -1

    def _finish(self, *, keep_alive: bool | None = None) -> Response:
        if self._head is None:
            raise self._fail("internal: response finished before its head")
        status, reason, headers, alive = self._head
        response = Response(
            status=status,
            reason=reason,
            headers=headers,
            body=bytes(self._body),
            keep_alive=alive if keep_alive is None else keep_alive,
        )
        self._head = None
        self._body = bytearray()
        self._chunk_left = -1
        self._interim = 0
        self._trailer_bytes = 0
        return response
