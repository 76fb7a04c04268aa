"""The KMS client's deadline per attempt: a peer that drips bytes, each well within the read timeout, cannot
stretch a call; the attempt ends with botocore's timeout error, retried as botocore retries timeouts.

The peer stands in for a hostile host on the simulated vsock (a Unix socket): it answers one byte at a
time, forever (bounded by DRIP_LIMIT so that a broken client fails the test instead of hanging it).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import enclave
from attestation.sim import PARENT_CID, vsock_socket_path
from enclave import Config
from enclave._retry import INITIAL_RETRY_TOKENS, TIMEOUT_RETRY_COST
from enclave.errors import ConnectTimeoutError, ReadTimeoutError
from kms.tls import ensure_tls

#: Seconds between two dripped bytes: far inside every read timeout below.
DRIP = 0.02
#: A peer gives up dripping after this long (only a client without a deadline waits that long).
DRIP_LIMIT = 20.0
#: The attempt bound in these tests, and a read timeout far above each drip and the bound itself.
ATTEMPT = 0.5
READ_TIMEOUT = 5.0
#: A response head that never ends (a header value growing a byte at a time; 16 KB is 300 s away).
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nX-Drip: "
#: A handshake record header announcing 16 KB that never come.
TLS_RECORD_HEAD = b"\x16\x03\x03\x40\x00"


class StubNSM:
    def attestation(self, *, user_data=None, nonce=None, public_key=None) -> bytes:  # type: ignore[no-untyped-def]
        return b"DOC"

    def get_random(self) -> bytes:
        return bytes(256)


def _read_request(conn: socket.socket) -> bool:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return False
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        data = conn.recv(65536)
        if not data:
            return False
        body += data
    return True


class DripPeer:
    """Serves vsock (3, 8000) one connection at a time, dripping ``stream`` a byte every ``drip`` seconds.

    ``mode``: "http" reads the request first; "tls" does the TLS handshake (with ``server_context``) and then
    the same; "handshake" drips during the TLS handshake (after the ClientHello).
    """

    def __init__(
        self,
        stream: bytes,
        *,
        mode: str = "http",
        server_context: ssl.SSLContext | None = None,
        drip: float = DRIP,
    ) -> None:
        self.path = vsock_socket_path(PARENT_CID, 8000)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(8)
        self.stream = stream
        self.mode = mode
        self.server_context = server_context
        self.drip = drip
        self.connections = 0
        self.requests = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            conn = raw
            try:
                if self.mode == "handshake":
                    conn.recv(65536)  # the ClientHello
                elif self.mode == "tls":
                    assert self.server_context is not None
                    conn = self.server_context.wrap_socket(raw, server_side=True)  # takes over raw's fd
                if self.mode != "handshake":
                    if not _read_request(conn):
                        continue
                    self.requests += 1
                self._drip(conn)
            except OSError:
                pass  # the client hung up (or broke off the handshake): next connection
            finally:
                conn.close()
                raw.close()

    def _drip(self, conn: socket.socket) -> None:
        stream = itertools.chain(self.stream, itertools.repeat(ord("a")))
        for _ in range(math.ceil(DRIP_LIMIT / self.drip)):
            if self.stop.wait(self.drip):
                return
            conn.send(bytes([next(stream)]))  # OSError once the client has hung up: next connection

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=10)


@pytest.fixture
def peer_factory(sim_home: Path) -> Iterator[Callable[..., DripPeer]]:
    peers: list[DripPeer] = []

    def make(stream: bytes, **kw: object) -> DripPeer:
        peer = DripPeer(stream, **kw)  # type: ignore[arg-type]
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


def make_client(config: Config, **kw: object) -> enclave.KMSClient:
    kms = enclave.client(
        "kms",
        region_name="eu-west-2",
        aws_access_key_id="AKIDSIMULATED",
        aws_secret_access_key="sim/secret/key",
        nsm=StubNSM(),
        config=config,
        **kw,  # type: ignore[arg-type]
    )
    kms._sleep = lambda _seconds: None  # no backoff waits in tests
    return kms


def test_a_dripping_peer_is_cut_at_the_attempt_deadline_and_retried_as_a_timeout(
    peer_factory: Callable[..., DripPeer],
) -> None:
    peer = peer_factory(HEAD)
    config = Config(read_timeout=READ_TIMEOUT, attempt_timeout=ATTEMPT, retries={"total_max_attempts": 2})
    with make_client(config, use_ssl=False) as kms:
        with pytest.raises(ReadTimeoutError, match='Read timeout on endpoint URL: "vsock://3:8000"'):
            kms.generate_random(NumberOfBytes=8)
        assert (peer.connections, peer.requests) == (2, 2)  # one retry, on a new connection
        assert kms._quota.available == INITIAL_RETRY_TOKENS - TIMEOUT_RETRY_COST  # charged as a timeout


def test_a_response_that_completes_within_the_deadline_is_not_cut(
    peer_factory: Callable[..., DripPeer],
) -> None:
    body = b'{"__type": "ValidationException", "message": "no"}'
    answer = b"HTTP/1.1 400 X\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    peer_factory(answer, drip=DRIP / 4)
    # The whole answer drips in about len(answer) * DRIP / 4 seconds, far inside this attempt bound.
    assert len(answer) * DRIP * 10 < 30
    config = Config(read_timeout=READ_TIMEOUT, attempt_timeout=30, retries={"total_max_attempts": 1})
    with make_client(config, use_ssl=False) as kms, pytest.raises(kms.exceptions.ValidationException):
        kms.generate_random(NumberOfBytes=8)


@pytest.fixture
def tls_files(sim_home: Path) -> tuple[Path, ssl.SSLContext]:
    files = ensure_tls(sim_home / "tls", at=datetime.now(UTC))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    return files.ca_cert, context


def test_a_handshake_that_drips_is_cut_as_a_connect_timeout(
    peer_factory: Callable[..., DripPeer], tls_files: tuple[Path, ssl.SSLContext]
) -> None:
    ca, _ = tls_files
    peer_factory(TLS_RECORD_HEAD, mode="handshake")
    # connect_timeout alone (60 s) would let the handshake drip on until the peer gives up.
    config = Config(
        connect_timeout=60, read_timeout=60, attempt_timeout=ATTEMPT, retries={"total_max_attempts": 1}
    )
    with make_client(config, use_ssl=True, verify=ca) as kms, pytest.raises(ConnectTimeoutError):
        kms.generate_random(NumberOfBytes=8)


def test_a_tls_peer_that_drips_its_answer_is_cut_as_a_read_timeout(
    peer_factory: Callable[..., DripPeer], tls_files: tuple[Path, ssl.SSLContext]
) -> None:
    ca, server_context = tls_files
    peer = peer_factory(HEAD, mode="tls", server_context=server_context)
    config = Config(read_timeout=READ_TIMEOUT, attempt_timeout=ATTEMPT, retries={"total_max_attempts": 1})
    with make_client(config, use_ssl=True, verify=ca) as kms, pytest.raises(ReadTimeoutError):
        kms.generate_random(NumberOfBytes=8)
    assert peer.requests == 1


# -- The option ------------------------------------------------------------------------------------------


def test_the_default_bound_is_connect_plus_read_timeout() -> None:
    assert Config().attempt_seconds == 120.0  # botocore's 60 s + 60 s
    assert Config(connect_timeout=2, read_timeout=3).attempt_seconds == 5
    assert Config(connect_timeout=2, read_timeout=3, attempt_timeout=0.25).attempt_seconds == 0.25


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, 3601.0])
def test_a_bad_attempt_timeout_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="timeouts must be positive numbers of seconds up to 3600"):
        Config(attempt_timeout=bad)
