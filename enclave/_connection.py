"""One persistent HTTP/1.1 connection to KMS: over vsock (through vsock-proxy) or TCP, TLS when configured.

The I/O shell around :mod:`enclave._http`. Rules:

- One request in flight; each request is written with one ``sendall`` of prebuilt bytes.
- A plain (non-TLS) connection does its I/O through :class:`enclave._sockets.PlainSocketIO` (a request is
  one ``send``; the answer is waited for with a ``poll`` that only readable data wakes); the read timeout
  applies per wait. TLS connections use Python's socket timeouts.
- Each exchange is one attempt with a deadline, ``attempt_timeout`` seconds after it starts (the rules
  and the default are :class:`enclave._config.Config`'s): connecting, the TLS handshake, the send and every
  read wait at most until then, whatever their own timeouts allow, so a peer that sends one byte per read
  timeout cannot stretch a call. Past it, an attempt still connecting raises ConnectTimeoutError and any
  other a ReadTimeoutError (botocore's names; both are retried as timeouts). The silent reopen of a stale
  connection (below) belongs to the same attempt and the same deadline.
- The connection is opened lazily and kept open while the server keeps it alive. A reused connection
  that turns out to be dead before any response byte arrives (the server or proxy closed it while idle)
  is reopened once, silently, as HTTP clients do for stale pooled connections. Every other failure closes
  the connection and raises: a fresh connection closed before any byte is an EndpointConnectionError
  (what vsock-proxy does when it cannot reach KMS), a timeout a Connect/ReadTimeoutError.
- After ``fork()`` the child never touches the parent's connection; it opens its own.
- TLS: server name ``kms.<region>.amazonaws.com`` (or the configured one), certificate checked against the
  configured CA bundle; TLS runs end to end from the enclave, so the proxy only ever sees ciphertext.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass

from enclave import vsock
from enclave._http import Response, ResponseReader
from enclave._sockets import PlainSocketIO, fork_generation
from enclave.errors import ConnectTimeoutError, EndpointConnectionError, ProtocolError, ReadTimeoutError

__all__ = ["ENV_KMS_TLS", "Connection", "Endpoint"]

#: Environment variable that says whether KMS serves TLS (the rules are in :mod:`enclave.kms`).
ENV_KMS_TLS = "NITRO_SIM_KMS_TLS"

#: Size of the reusable receive buffer (a GenerateRandom answer is < 9 KB).
RECV_BUFFER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where KMS is reached. ``scheme`` is ``vsock`` (cid, port) or ``tcp`` (host, port)."""

    scheme: str
    host: str
    port: int
    cid: int = vsock.PARENT_CID
    tls: bool = False
    server_name: str = ""

    def __post_init__(self) -> None:
        if self.scheme not in ("vsock", "tcp"):
            raise ValueError(f"unknown endpoint scheme {self.scheme!r}")

    @property
    def url(self) -> str:
        """The endpoint in messages: ``vsock://CID:PORT`` (as :mod:`enclave.vsock` names it) or ``http(s)://...``.

        One form everywhere, and the one ``endpoint_url`` accepts; TLS over vsock is not part of the name.
        """
        if self.scheme == "vsock":
            return vsock.endpoint_name(self.cid, self.port)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class Connection:
    """A lazily opened, reused connection; :meth:`exchange` sends one request and returns its response."""

    __slots__ = (
        "_attempt_timeout",
        "_buffer",
        "_connect_timeout",
        "_endpoint",
        "_generation",
        "_io",
        "_read_timeout",
        "_simulated",
        "_sock",
        "_ssl_context",
        "_view",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connect_timeout: float,
        read_timeout: float,
        attempt_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        simulated: bool | None = None,
    ) -> None:
        if endpoint.tls and ssl_context is None:
            raise ValueError("a TLS endpoint needs an SSL context")
        self._endpoint = endpoint
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._attempt_timeout = connect_timeout + read_timeout if attempt_timeout is None else attempt_timeout
        self._ssl_context = ssl_context
        self._simulated = simulated
        self._sock: socket.socket | None = None
        self._io: PlainSocketIO | None = None
        self._generation = -1
        self._buffer = bytearray(RECV_BUFFER_BYTES)
        self._view = memoryview(self._buffer)

    @property
    def is_open(self) -> bool:
        """Whether a connection is currently open (and will be reused)."""
        return self._sock is not None

    def close(self) -> None:
        """Close the connection (a later exchange opens a new one)."""
        sock, self._sock, self._io = self._sock, None, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _open(self, deadline: float) -> socket.socket:
        ep = self._endpoint
        timeout = min(self._connect_timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise ConnectTimeoutError(ep.url)
        if ep.scheme == "vsock":
            sock = vsock.connect(ep.cid, ep.port, timeout=timeout, simulated=self._simulated)
        else:
            try:
                sock = socket.create_connection((ep.host, ep.port), timeout=timeout)
            except TimeoutError:
                raise ConnectTimeoutError(ep.url) from None
            except OSError as exc:
                raise EndpointConnectionError(ep.url, exc.strerror or str(exc)) from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl_context is not None:
            # The handshake runs under one timeout for all of it (CPython's do_handshake keeps a deadline),
            # bounded by what is left of the attempt.
            timeout = min(self._connect_timeout, deadline - time.monotonic())
            if timeout <= 0:
                sock.close()
                raise ConnectTimeoutError(ep.url)
            sock.settimeout(timeout)
            try:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=ep.server_name or None)
            except TimeoutError:
                sock.close()
                raise ConnectTimeoutError(ep.url) from None
            except (ssl.SSLError, ssl.CertificateError) as exc:
                sock.close()
                simulated = vsock.is_simulated() if self._simulated is None else self._simulated
                hint = f" (if kms-sim serves plain HTTP, set {ENV_KMS_TLS}=0)" if simulated else ""
                raise EndpointConnectionError(ep.url, f"TLS handshake failed: {exc}{hint}") from None
            except OSError as exc:
                sock.close()
                raise EndpointConnectionError(ep.url, f"TLS handshake failed: {exc}") from None
        sock.settimeout(self._read_timeout)
        return sock

    def exchange(self, request: bytes) -> Response:
        """Send ``request`` (complete bytes) and return the response; see the module rules."""
        if self._sock is not None and self._generation != fork_generation():
            self._sock = None  # inherited across fork(): the parent's connection is not ours to use
        reused = self._sock is not None
        deadline = time.monotonic() + self._attempt_timeout
        try:
            return self._attempt(request, deadline)
        except _StaleConnectionError:
            if not reused:
                raise EndpointConnectionError(
                    self._endpoint.url, "the connection was closed before any response"
                ) from None
        try:
            return self._attempt(request, deadline)
        except _StaleConnectionError:
            raise EndpointConnectionError(
                self._endpoint.url, "the connection was closed before any response"
            ) from None

    def _at_eof(self, reader: ResponseReader) -> Response:
        response = reader.eof()  # raises ProtocolError on a truncated response
        self.close()
        if response is None:
            raise _StaleConnectionError
        return response

    def _attempt(self, request: bytes, deadline: float) -> Response:
        if self._sock is None:
            self._sock, self._generation = self._open(deadline), fork_generation()
            if self._ssl_context is None:
                self._io = PlainSocketIO(self._sock, self._read_timeout)
        sock = self._sock
        io = self._io
        reader = ResponseReader()
        try:
            if io is None:
                self._tls_sendall(sock, request, deadline)
            else:
                io.set_deadline(deadline)
                io.sendall(request)
            while True:
                # Every read waits first: what comes next needs the server's (and the proxy's) work.
                if io is None:
                    self._tls_wait_until(sock, deadline)
                    n = sock.recv_into(self._buffer)
                else:
                    n = io.recv_into(self._buffer)
                if n == 0:
                    return self._at_eof(reader)
                response = reader.feed(self._view[:n])
                if response is not None:
                    if not response.keep_alive:
                        self.close()
                    return response
        except _StaleConnectionError:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise ReadTimeoutError(self._endpoint.url) from None
        except ProtocolError:
            self.close()
            raise
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as exc:
            self.close()
            if not reader.started:
                raise _StaleConnectionError from exc
            raise EndpointConnectionError(self._endpoint.url, f"connection lost: {exc}") from None
        except OSError as exc:
            self.close()
            raise EndpointConnectionError(self._endpoint.url, exc.strerror or str(exc)) from None

    def _tls_wait_until(self, sock: socket.socket, deadline: float) -> None:
        """Let the next TLS socket call wait at most ``read_timeout``, and never past ``deadline``."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(min(self._read_timeout, left))

    def _tls_sendall(self, sock: socket.socket, data: bytes, deadline: float) -> None:
        # SSLSocket.sendall times each send on its own; a peer reading slowly must not stretch it either.
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            self._tls_wait_until(sock, deadline)
            sent += sock.send(view[sent:])


class _StaleConnectionError(Exception):
    """Internal: the connection died before any response byte (safe to resend once on a fresh one)."""
