"""kms.transport: a tick's writes leave as one write, in order; close flushes, abort drops (real sockets).
And the ASGI shell's header decoding."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kms.transport import INVALID_REQUEST_REPORT_S, InvalidRequestReports, TickCoalescingTransport


class _Recorder(asyncio.Protocol):
    """The real transport's protocol; counts nothing, the peer socket tells what was sent."""


async def _pair() -> tuple[TickCoalescingTransport, asyncio.Transport, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(_Recorder, sock=ours)
    return TickCoalescingTransport(transport, loop), transport, theirs


async def _read(sock: socket.socket) -> list[bytes]:
    chunks = []
    await asyncio.sleep(0.05)
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return chunks
        if not chunk:
            return chunks
        chunks.append(chunk)


def test_writes_of_one_tick_leave_as_one_write_in_order() -> None:
    async def run() -> None:
        wrapped, real, peer = await _pair()
        wrapped.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        wrapped.write(b"")
        wrapped.writelines([b"bo", bytearray(b"dy")])
        assert real.get_write_buffer_size() == 0  # nothing handed over yet
        assert wrapped.get_write_buffer_size() == 42
        assert await _read(peer) == [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"]
        wrapped.write(b"next tick")
        assert await _read(peer) == [b"next tick"]  # held for one tick at most
        wrapped.close()
        peer.close()

    asyncio.run(run())


def test_close_flushes_and_abort_drops() -> None:
    async def run() -> None:
        wrapped, real, peer = await _pair()
        wrapped.write(b"last words")
        wrapped.close()
        assert real.is_closing()
        assert b"".join(await _read(peer)) == b"last words"
        peer.close()
        wrapped, real, peer = await _pair()
        wrapped.write(b"never sent")
        wrapped.abort()
        await asyncio.sleep(0.01)
        assert await _read(peer) == []
        assert wrapped.get_extra_info("socket") is real.get_extra_info("socket")
        peer.close()

    asyncio.run(run())


@given(st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=6)), max_size=6))
def test_header_decoding_is_per_pair_latin1(raw: list[tuple[bytes, bytes]]) -> None:
    from kms.app import _decode_headers

    assert _decode_headers(raw) == [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    with_lf = [*raw, (b"x-a", b"1\n2")]
    assert _decode_headers(with_lf) == [(k.decode("latin-1"), v.decode("latin-1")) for k, v in with_lf]


def _exchange(sock: socket.socket, data: bytes, until: bytes) -> bytes:
    sock.sendall(data)
    received = b""
    while until not in received:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed; got {received!r}"
        received += chunk
    return received


def test_served_responses_through_the_coalescing_protocol(start_server: Callable[..., Any]) -> None:
    """100-continue, an answered request and a HEAD through ``kms-sim serve``: nothing held back."""
    server = start_server()
    host, port = server.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n"
        assert _exchange(sock, head, b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        answer = _exchange(sock, b"{}", b'"}')
        assert answer.startswith(b"HTTP/1.1 400 ")  # unsigned: MissingAuthenticationTokenException
        assert b"MissingAuthenticationTokenException" in answer
        assert b"\r\ndate: " in answer  # uvicorn's Date header, as AWS answers carry
        head_answer = _exchange(sock, b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n", b"\r\n\r\n")
        assert head_answer.startswith(b"HTTP/1.1 ")


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, message, None, None)


def test_invalid_request_reports_are_one_a_period_with_the_count_held_back() -> None:
    now = [1000.0]
    reports = InvalidRequestReports(clock=lambda: now[0])
    first = _record(InvalidRequestReports.MESSAGE)
    assert reports.filter(first)
    assert first.getMessage() == "Invalid HTTP request received."
    for step in (1.0, 2.0):
        now[0] = 1000.0 + step
        assert not reports.filter(_record(InvalidRequestReports.MESSAGE))
    assert reports.filter(_record("Exception in ASGI application"))  # any other record passes
    now[0] = 1000.0 + INVALID_REQUEST_REPORT_S
    later = _record(InvalidRequestReports.MESSAGE)
    assert reports.filter(later)
    assert later.getMessage() == "Invalid HTTP request received. (2 more since the last report)"


def _address(server: Any) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return host, int(port)


def _served(sock: socket.socket) -> bool:
    """Whether the server answers an unsigned request on ``sock`` (False: it closed the connection)."""
    try:
        sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        answer = sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return False
    return b"MissingAuthenticationTokenException" in answer


def test_connections_past_the_bound_are_closed_unread(start_server: Callable[..., Any]) -> None:
    server = start_server("--max-connections", "2")
    address = _address(server)
    held = [socket.create_connection(address, timeout=10) for _ in range(2)]
    try:
        assert all(_served(sock) for sock in held)
        with socket.create_connection(address, timeout=10) as extra:
            assert not _served(extra)
        held.pop().close()  # a slot comes back once the server has seen this one go
        for _ in range(100):
            with socket.create_connection(address, timeout=10) as again:
                if _served(again):
                    break
        else:
            pytest.fail("no connection was served after one of the two closed")
        assert _served(held[0])  # the connection kept all along is still served
        assert "Traceback" not in server.stderr
    finally:
        for sock in held:
            sock.close()


def test_malformed_requests_are_reported_once_a_period(start_server: Callable[..., Any]) -> None:
    server = start_server()
    for _ in range(3):
        with socket.create_connection(_address(server), timeout=10) as sock:
            sock.sendall(b"NOT HTTP\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(_address(server), timeout=10) as sock:
        assert _served(sock)  # and it keeps serving
    assert server.stderr.count("Invalid HTTP request received.") == 1
