"""kms.transport: a tick's writes leave as one write, in order; close flushes, abort drops (real sockets).
And the ASGI shell's header decoding."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kms.transport import TickCoalescingTransport


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
