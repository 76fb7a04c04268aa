"""The sans-IO HTTP/1.1 response reader and request encoder: whole, byte by byte, and adversarial."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave._http import MAX_HEAD_BYTES, ResponseReader, encode_request_head
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
