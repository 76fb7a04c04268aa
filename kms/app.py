"""The ASGI shell around :class:`kms.service.Service`: read the body, stamp the time, send the answer.

``create_app()`` is the factory uvicorn workers call (``kms.app:create_app``, ``factory=True``); it
builds the service from the settings ``kms-sim serve`` left in ``KMS_SIM_SETTINGS``. Any ASGI server can
run it the same way. Nothing here decides anything: the service does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from kms.protocol import MAX_REQUEST_BODY_BYTES
from kms.server import build_service, settings_from_environment
from kms.service import Request, Service

__all__ = ["KMSApp", "create_app"]

#: linux/prctl.h: deliver a signal to this process when its parent dies.
_PR_SET_PDEATHSIG = 1

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The header pairs as latin-1 text (a byte per character, as HTTP/1.1 header octets are).

    One decode of all names and values joined by LF, split back into pairs; if any name or value held an
    LF itself (HTTP forbids it, servers refuse it), the count is off and each is decoded on its own.
    """
    flat = b"\n".join(chain.from_iterable(raw)).decode("latin-1").split("\n")
    if len(flat) == 2 * len(raw):
        return list(zip(flat[::2], flat[1::2], strict=True))
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


class KMSApp:
    """An ASGI 3 application serving one :class:`Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        # Read at most one byte past the bound: the service answers an oversized body without reading on.
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body: bytes = message.get("body", b"")
        if message.get("more_body", False):  # a body in several messages (rare: ours are small)
            chunks = [body]
            size = len(body)
            more = True
            while more and size <= MAX_REQUEST_BODY_BYTES:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
        client = scope.get("client")
        raw_path = scope.get("raw_path") or scope["path"].encode()
        request = Request(
            method=scope["method"],
            path=raw_path.decode("latin-1").split("?", 1)[0],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=_decode_headers(scope["headers"]),
            body=body,
            source_ip=client[0] if client else "127.0.0.1",
        )
        response = self.service.handle(request, at=datetime.now(UTC), tick=time.monotonic())
        await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
        await send({"type": "http.response.body", "body": response.body})


def _die_with_parent(supervisor: int | None) -> None:
    """Linux: SIGTERM this worker when the supervising ``kms-sim serve`` dies, even by ``kill -9``.

    Otherwise orphaned workers would keep the listening socket open and answer with stale state.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The supervisor may have died before prctl took effect, even before this worker got here (a slow
    # start): then the parent is no longer the supervisor whose pid the settings carry.
    if supervisor is not None and os.getppid() != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


def create_app() -> KMSApp:
    """The factory for ASGI servers: the service configured by ``KMS_SIM_SETTINGS``."""
    settings = settings_from_environment()
    if settings.workers > 1:  # a uvicorn worker process under kms-sim's supervisor
        _die_with_parent(settings.supervisor_pid)
    # Under a supervisor that has checked the files, a file mid-edit at this instant is not fatal.
    return KMSApp(build_service(settings, worker=settings.workers > 1))
