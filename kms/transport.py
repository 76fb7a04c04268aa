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

Which uvicorn: :class:`CoalescingHttpToolsProtocol` reads uvicorn's private protocol (``cycle``, ``flow``,
``connections``, the parser callbacks, ``send_400_response``, ``_unsupported_upgrade_warning``) and kms/cli.py
runs its ``Server`` and ``Multiprocess``, any of which a uvicorn release may change. So pyproject.toml admits
only the range that is tested, ``uvicorn>=0.51.0,<=0.55.0``, and tests/kms/test_uvicorn_range.py runs the
checks of these rules and of ``kms-sim serve`` against the real process on both ends (the oldest with the
oldest httptools allowed, 0.6.0) on every ``make test``. Tried: up to 0.30.5 (0.25.0, 0.29.0, 0.30.0 run)
any ``Upgrade:`` request printed uvicorn's WebSocket advice (the hook had another name); 0.30.6 to 0.50.2
pass all but ``--workers`` (``Multiprocess`` then took a ``target``); 0.51.0 to 0.55.0 pass. Owning the
HTTP/1.1 shell on httptools instead would mean carrying what uvicorn's protocol, flow control, server and
worker supervisor do (~1,300 lines there) to drop this subclass (~200 lines) and that test (~200).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from uvicorn import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kms.audit import AuditLog, refused_line
from kms.cli import DEFAULT_MAX_CONNECTIONS as MAX_CONNECTIONS
from kms.cli import DEFAULT_REQUEST_TIMEOUT_S
from kms.errors import ValidationException
from kms.protocol import CONTENT_TYPE, encode_error
from kms.service import new_request_id

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT_S",
    "INVALID_REQUEST_REPORT_S",
    "MAX_CONNECTIONS",
    "MAX_REQUEST_HEAD_BYTES",
    "REQUEST_TIMEOUT_CODE",
    "REQUEST_TIMEOUT_MESSAGE",
    "CoalescingHttpToolsProtocol",
    "InvalidRequestReports",
    "ServeConfig",
    "TickCoalescingTransport",
]


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


#: Largest request head (request line and header fields, trailer fields included) taken before the request
#: is refused, and the most bytes a connection may send that complete nothing in the parser (one field
#: that never ends). The service refuses a header section over MAX_REQUEST_HEADER_BYTES (kms.protocol),
#: but only once it is whole: httptools and uvicorn buffer fields without limit, so a head or a trailer
#: section that never ended grew the server's memory by what the client sent.
MAX_REQUEST_HEAD_BYTES = 64 * 1024
#: The audit record of a request not received whole before the deadline (the connection is closed without an
#: answer): AWS's Common Errors name it "RequestTimeoutException: Problems with the request at the HTTP
#: level. Reading the Request timed out." (HTTP 408).
REQUEST_TIMEOUT_CODE = "RequestTimeoutException"
REQUEST_TIMEOUT_MESSAGE = "Problems with the request at the HTTP level. Reading the Request timed out."
#: Least time between two stderr lines saying that malformed HTTP arrived (any client can send it at will).
INVALID_REQUEST_REPORT_S = 60.0


class InvalidRequestReports(logging.Filter):
    """Let uvicorn's "Invalid HTTP request received." through once per :data:`INVALID_REQUEST_REPORT_S`.

    uvicorn logs one warning per malformed request, so a client could grow the operator's stderr at will.
    The first one of a period is logged, with how many were held back since the last one logged; every
    other record passes untouched. Installed on uvicorn's error logger when this module is imported, which
    happens in every worker process (the protocol class travels to them by reference).
    """

    MESSAGE = "Invalid HTTP request received."

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        now = self._clock()
        if self._last is not None and now - self._last < INVALID_REQUEST_REPORT_S:
            self._held += 1
            return False
        if self._held:
            record.msg = f"{self.MESSAGE} ({self._held} more since the last report)"
        self._last = now
        self._held = 0
        return True


logging.getLogger("uvicorn.error").addFilter(InvalidRequestReports())


class ServeConfig(Config):
    """uvicorn's Config plus the request deadline and the connection bound that
    :class:`CoalescingHttpToolsProtocol` enforces (a module-level class: it pickles to ``--workers``
    processes with the rest of the config)."""

    def __init__(
        self,
        app: Any,
        *,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`TickCoalescingTransport` (one write per response), with
    four rules of its own for the connection's life:

    - At most ``ServeConfig.max_connections`` open at once per process; one past it is closed unread.
    - A request deadline: a connection gets ``ServeConfig.request_timeout_s`` to deliver each request
      whole; when it runs out while no request is being answered (the client is still sending, or sends
      nothing), the connection is closed. Time spent answering is not counted, but time an answer waits
      for a client that does not read is: then the connection is dropped with what it holds.
    - Half-close: a client may shut down its sending side after its last request (HTTP/1.1 allows it;
      ``nc -N`` does it). The loop closed the connection at once, dropping the answer of a request already
      executed and audited (held for the tick by the coalescing transport, or not yet made); now the held
      bytes are handed over first, answers still to come are sent, then the connection closes.
    - Bad bytes after complete requests on one connection (pipelining): those requests are answered, then
      the connection closes; uvicorn wrote its 400 at once, closed, and dropped their answers (the client
      read the 400 as the answer to its first, valid request).

    A request refused here, before the service sees it, gets its audit record as every other does
    (kms.audit ``refused_line``: what its fields so far claim, the error it got): a head over the bound
    (ValidationException, as answered) and a request the deadline cut (:data:`REQUEST_TIMEOUT_CODE`). A body
    over its bound is the service's to refuse (kms.app reads one byte past it) and audit. Not requests, and
    not recorded: a connection over the bound (closed unread), one idle between requests, bytes that are not
    HTTP (uvicorn's 400, rate-limited on stderr by :class:`InvalidRequestReports`).
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._coalescing = TickCoalescingTransport(transport, self.loop)
        super().connection_made(self._coalescing)
        self._deadline: asyncio.TimerHandle | None = None
        self._request_timeout_s = getattr(self.config, "request_timeout_s", DEFAULT_REQUEST_TIMEOUT_S)
        self._arm_deadline()
        self._head_bytes = 0  # this message's request line and fields so far
        self._unparsed = 0  # bytes of consecutive reads that completed nothing
        self._progress = False  # whether the read being parsed completed anything
        self._refused = False
        self._in_message = False  # a request has begun and not yet arrived whole
        self._head_done = False  # ... and its head arrived whole (it has a cycle of its own)
        # This connection included: over the bound, it is closed before any byte of it is read.
        if len(self.connections) > getattr(self.config, "max_connections", MAX_CONNECTIONS):
            self.transport.close()

    # -- the request head's bound ----------------------------------------------------------------------------
    #
    # Two counts, each bounded by MAX_REQUEST_HEAD_BYTES:
    # - the bytes of the current message's request line and header fields, trailer fields included, as the
    #   parser hands them over (uvicorn keeps every field, trailers too, in the request's header list);
    # - the bytes of consecutive reads in which the parser completed nothing at all (no field, no body
    #   byte): one field that never ends, held inside httptools until it does.
    # Exact per message, so a read holding many small pipelined requests counts each on its own.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._progress = True
        self._head_bytes = 0
        self._in_message = True
        self._head_done = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._head_done = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_message = False

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._progress = True
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._progress = True
        self._head_bytes += len(name) + len(value) + 4  # "name: value\r\n" as sent, near enough

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._progress = True

    def data_received(self, data: bytes) -> None:
        if self._refused:  # the connection is closing: nothing more of it is parsed
            return
        self._progress = False
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            self._refuse_head()
        elif self._progress:
            self._unparsed = 0
        else:
            self._unparsed += len(data)
            if self._unparsed > MAX_REQUEST_HEAD_BYTES:
                self._refuse_head()

    def _refuse_head(self) -> None:
        """Answer a head over the bound as the service answers oversized headers, and close.

        If earlier requests on this connection are still being answered, they are answered first and the
        connection then closes, as for other bad bytes after good requests (a 400 now would be read as the
        answer to the first of them).
        """
        self._refused = True
        self.transport.pause_reading()
        error = ValidationException(f"Request head is over the {MAX_REQUEST_HEAD_BYTES}-byte limit")
        request_id = new_request_id()
        self._audit_refusal(error.code, error.message, request_id)
        if self._close_after_answers():
            return
        body = encode_error(error)
        head = (
            f"HTTP/1.1 400 Bad Request\r\ncontent-type: {CONTENT_TYPE}\r\n"
            f"x-amzn-requestid: {request_id}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()

    # -- the request deadline -------------------------------------------------------------------------------

    def _arm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self._request_timeout_s, self._deadline_passed)

    def _answering(self) -> bool:
        """Whether the newest request arrived whole and is still being answered (the server's time)."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.more_body

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._answering() and not self.flow.write_paused:
            self._arm_deadline()  # the client is waiting for us: not its time
        elif self.flow.write_paused:
            # An answer waits for the client to read, and it has not for a whole period: drop what is
            # buffered (close would wait for a reader that never comes, holding the descriptor).
            self.transport.abort()
        else:
            if self._cut_short():
                self._audit_refusal(REQUEST_TIMEOUT_CODE, REQUEST_TIMEOUT_MESSAGE, new_request_id())
            self.transport.close()

    def _cut_short(self) -> bool:
        """Whether part of a request arrived and it was not answered (an answer made while its body still
        came in, to a body over the bound, is the service's, and audited there)."""
        answered = self._head_done and self.cycle is not None and self.cycle.response_complete
        return self._in_message and not answered

    def _audit_refusal(self, code: str, message: str, request_id: str) -> None:
        """Append the audit record of the current request, refused here (kms.app's service keeps the log)."""
        audit = getattr(getattr(self.app, "service", None), "audit", None)
        if not isinstance(audit, AuditLog):  # another ASGI app, or a service that keeps no log
            return
        audit.write_line(
            refused_line(
                at=datetime.now(UTC),
                request_id=request_id,
                headers=self.headers or (),
                target=getattr(self, "url", None) or b"",
                source_ip=self.client[0] if self.client else "127.0.0.1",
                error_code=code,
                error_message=message,
            )
        )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_deadline()  # a fresh period for the next request

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    # -- the end of the client's bytes -----------------------------------------------------------------------

    def _close_after_answers(self) -> bool:
        """If requests are being answered: close once the newest is, and say so (True)."""
        if not self._answering():
            return False
        self.cycle.keep_alive = False  # its answer closes the connection (queued ones are answered first)
        return True

    def eof_received(self) -> bool | None:  # type: ignore[override] # asyncio.Protocol's signature
        # The loop closes the real transport when this returns None: what this tick wrote (a finished
        # answer, held by the coalescing transport) must be handed over first, or it is dropped.
        self._coalescing.flush()
        if self.scheme == "http" and self._close_after_answers():
            return True  # keep the transport open for writing the answers (TLS cannot half-close)
        return None  # nothing to answer, or a request that will never arrive whole: close

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn logged two lines per ``Upgrade:`` request, advising the operator to install a WebSocket
        # library: advice a client could print at will. The request is served as plain HTTP, as before.
        pass

    def send_400_response(self, msg: str) -> None:
        if not self._close_after_answers():
            super().send_400_response(msg)
