"""uvicorn's httptools protocol, with each loop tick's writes to a connection sent as one.

uvicorn writes a response in two ``transport.write`` calls, the status line and headers on
``http.response.start`` and the body on ``http.response.body``. On a TCP connection with TCP_NODELAY each
is a ``send`` system call and a segment of its own: the kernel's TCP path twice, and two wake-ups of the
reader (vsock-proxy, then the client). An ASGI application cannot change that (it never sees the
transport), but the server's protocol class is a uvicorn setting (``Config(http=...)``), so ``kms-sim
serve`` runs uvicorn with :class:`CoalescingHttpToolsProtocol`: the same protocol over a transport that
keeps what is written during one event-loop tick and hands it to the real transport at the end of that
tick, as one write. uvicorn's send of the start and the body runs in one tick (nothing awaits between
them unless writing is paused), so a response leaves as one segment.

Invariants: bytes leave in the order written; nothing is held past the tick (a ``call_soon`` flush), so a
``100 Continue``, a HEAD response's head or an error page goes out as before, one tick later at most;
``close`` and ``write_eof`` flush first; ``abort`` drops what is held, as it drops the real buffer.
Everything else is the real transport's. The application is unchanged and still runs under any ASGI
server; only ``kms-sim serve`` picks this protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "TickCoalescingTransport"]


class TickCoalescingTransport(asyncio.Transport):
    """A transport whose writes within one loop tick reach ``transport`` as one ``write``."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes | bytearray | memoryview] = []

    # -- writes: held for the tick, then one write ----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what this tick wrote to the real transport (a no-op if nothing is held)."""
        held = self._held
        if not held:
            return
        self._held = []
        if self._transport.is_closing():  # the peer went away; the real transport would drop it too
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._held)

    # -- everything else is the real transport's ----------------------------------------------------------

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`TickCoalescingTransport` (one write per response)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(TickCoalescingTransport(transport, self.loop))
