"""The sans-IO HTTP/1.1 response reader and request encoder: whole, byte by byte, and adversarial."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave._http import MAX_HEAD_BYTES, MAX_INTERIM_RESPONSES, ResponseReader, encode_request_head
from enclave.errors import ProtocolError

OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n"
    b'x-amzn-RequestId: 1234\r\nContent-Length: 13\r\n\r\n{"Plaintext"}'
)
CHUNKED = (
    b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
)


def _feed_all(data: bytes, step: int | None = None):
    reader = ResponseReader()
    if step is None:
        return reader.feed(data)
    result = None
    for i in range(0, len(data), step):
        got = reader.feed(data[i : i + step])
        if got is not None:
            assert result is None
            result = got
    return result


@pytest.mark.parametrize("step", [None, 1, 7])
def test_content_length(step: int | None) -> None:
    response = _feed_all(OK, step)
    assert response is not None
    assert response.status == 200
    assert response.body == b'{"Plaintext"}'
    assert response.header("X-AMZN-REQUESTID") == "1234"
    assert response.keep_alive


@pytest.mark.parametrize("step", [None, 1, 3])
def test_chunked(step: int | None) -> None:
    response = _feed_all(CHUNKED, step)
    assert response is not None
    assert response.status == 400
    assert response.body == b"hello world"


def test_interim_100_is_skipped() -> None:
    response = _feed_all(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert response is not None
    assert response.status == 200


def test_close_framed_body_and_connection_close() -> None:
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\npartial") is None
    response = reader.eof()
    assert response is not None
    assert response.body == b"partial"
    assert not response.keep_alive
    closing = _feed_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert closing is not None
    assert not closing.keep_alive


def test_http10_defaults_to_close() -> None:
    response = _feed_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert response is not None
    assert not response.keep_alive


def test_eof_before_anything_is_none_and_truncated_is_error() -> None:
    assert ResponseReader().eof() is None
    reader = ResponseReader()
    reader.feed(OK[:-3])
    assert reader.started
    with pytest.raises(ProtocolError):
        reader.eof()


@pytest.mark.parametrize(
    "data",
    [
        b"SMTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
    ],
    ids=[
        "not-http",
        "short-status",
        "conflicting-length",
        "negative-length",
        "huge-length",
        "no-colon",
        "obs-fold",
        "not-chunked",
        "bad-chunk-size",
        "chunk-overrun",
        "trailing-junk",
        "huge-head",
    ],
)
def test_malformed_responses_fail_closed(data: bytes) -> None:
    reader = ResponseReader()
    with pytest.raises(ProtocolError):
        reader.feed(data)
    with pytest.raises(ProtocolError):
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def test_encode_request_head() -> None:
    head = encode_request_head(
        "POST", "/", [("Host", "kms.us-east-1.amazonaws.com"), ("Content-Length", "2")]
    )
    assert head == b"POST / HTTP/1.1\r\nHost: kms.us-east-1.amazonaws.com\r\nContent-Length: 2\r\n\r\n"
    with pytest.raises(ValueError, match="forbidden"):
        encode_request_head("POST", "/", [("X", "a\r\nInjected: 1")])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_parse_or_raise_protocol_error(data: bytes, step: int) -> None:
    reader = ResponseReader()
    try:
        for i in range(0, len(data), step):
            reader.feed(data[i : i + step])
        reader.eof()
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([1, 2, 5, 1000]))
def test_valid_responses_survive_any_split(body: bytes, step: int) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        len(body),
        body,
    )
    for data in (raw, chunked) if body else (raw,):
        assert _feed_all(data, step).body == body


# -- hostile peers: sizes in non-ASCII or overlong digits, lenient chunk sizes, unbounded trailers / 1xx ----


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab",  # latin-1 "²": str.isdigit() but not int()
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\xb3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",  # past int()'s 4300 digits
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\xa0\r\n\r\nab",  # str.strip() took U+00A0
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0_2\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n",
    ],
    ids=[
        "length-superscript",
        "length-superscripts",
        "length-overlong",
        "length-nbsp",
        "length-empty",
        "chunk-0x",
        "chunk-underscore",
        "chunk-plus",
        "chunk-minus-zero",
        "chunk-empty",
    ],
)
def test_sizes_are_ascii_digits_only(data: bytes) -> None:
    # Before the fix the first three escaped as ValueError (not ProtocolError); the chunk sizes were taken.
    for step in (None, 1):
        with pytest.raises(ProtocolError):
            _feed_all(data, step)


def test_leading_zeros_in_content_length_are_still_a_number() -> None:
    assert _feed_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0002\r\n\r\nab").body == b"ab"
    # Past int()'s 4300 digits (a ValueError before the fix), still the number 1.
    assert _feed_all(b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 5000 + b"1\r\n\r\na").body == b"a"


def _feed_forever(first: bytes, again: bytes) -> None:
    """Feed ``first``, then ``again`` over and over: a peer that never ends. Returns only if a (wrong)
    response completes; a bounded reader raises long before the loop's own bound."""
    reader = ResponseReader()
    reader.feed(first)
    for _ in range(MAX_HEAD_BYTES + 1):
        assert reader.feed(again) is None


def test_trailer_section_is_bounded() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"
    # One endless trailer line (no CRLF): refused once over the bound, not buffered without end.
    with pytest.raises(ProtocolError, match="trailer"):
        _feed_forever(head, b"X" * 1024)
    # Endless short trailer fields: refused the same way.
    with pytest.raises(ProtocolError, match="trailer"):
        _feed_forever(head, b"T: 1\r\n")
    # Within the bound, trailers are skipped.
    assert _feed_all(head + b"T: 1\r\n" * 100 + b"\r\n").body == b"ab"


def test_interim_responses_are_bounded() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert _feed_all(interim * MAX_INTERIM_RESPONSES + final).status == 200
    with pytest.raises(ProtocolError, match="interim"):
        _feed_forever(b"", interim)


_header_values = st.text(
    st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"), max_size=12
)
_framing_names = st.sampled_from(["Content-Length", "Transfer-Encoding", "Connection", "X"])


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    st.sampled_from([OK, CHUNKED]),
    st.lists(st.tuples(_framing_names, _header_values), max_size=4),
    st.integers(min_value=0, max_value=200),
    st.binary(max_size=8),
    st.sampled_from([0, 1, 3]),
)
def test_mutated_valid_responses_parse_or_raise_protocol_error(
    base: bytes, extra: list[tuple[str, str]], at: int, junk: bytes, step: int
) -> None:
    # Hostile framing headers (any latin-1 value) spliced into a valid answer, junk inserted anywhere.
    status_line, _, rest = base.partition(b"\r\n")
    fields = b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in extra)
    data = status_line + b"\r\n" + fields + rest
    data = data[:at] + junk + data[at:]
    step = step or len(data)
    reader = ResponseReader()
    try:
        for i in range(0, len(data), step):
            reader.feed(data[i : i + step])
        reader.eof()
    except ProtocolError:
        pass
