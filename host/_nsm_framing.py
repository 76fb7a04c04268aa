"""The sans-IO framing of an NSM device connection: bytes in, request bodies (and answers owed) out, in order.

A message is a 4-byte big-endian length and a CBOR body (nsm-api's wire shape, :mod:`attestation.nsm_wire`).
A frame over ``MAX_REQUEST_BYTES`` (the driver's limit) is drained and owed an ``InputTooLarge`` answer; one
over :data:`MAX_DISCARD_BYTES` is owed that answer and ends the connection (nsm-sim cannot afford to read it).
"""

from __future__ import annotations

from attestation.nsm_wire import FRAME_HEADER_BYTES, MAX_REQUEST_BYTES, frame_length

__all__ = ["MAX_DISCARD_BYTES", "TOO_LARGE", "TOO_LARGE_CLOSE", "Framer", "Oversized"]

#: Oversized frames up to this size are drained and answered; larger ones close the connection.
MAX_DISCARD_BYTES = 64 * 1024


class Framer:
    """Sans-IO framing of one connection: bytes in, the requests (and answers owed) out, in order.

    :meth:`feed` returns request bodies, :data:`TOO_LARGE` for an oversized frame that was drained (answer
    ``InputTooLarge`` and go on) or :data:`TOO_LARGE_CLOSE` for one too large to drain (answer, then close).
    """

    __slots__ = ("_buffer", "_discard", "closed")

    def __init__(self) -> None:
        self._buffer = bytearray()
        #: Bytes of an oversized (but drainable) frame still to be read and dropped.
        self._discard = 0
        self.closed = False

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        if self.closed:
            return []
        if not self._buffer and not self._discard and len(data) >= FRAME_HEADER_BYTES:
            # The common case: exactly one whole request in one read; no copy into the buffer.
            length = frame_length(data[:FRAME_HEADER_BYTES])
            if length <= MAX_REQUEST_BYTES and len(data) == FRAME_HEADER_BYTES + length:
                return [data[FRAME_HEADER_BYTES:]]
        self._buffer += data
        return self._drain()

    def _drain(self) -> list[bytes | Oversized]:
        out: list[bytes | Oversized] = []
        buffer = self._buffer
        while True:
            if self._discard:
                dropped = min(self._discard, len(buffer))
                del buffer[:dropped]
                self._discard -= dropped
                if self._discard:
                    return out
                out.append(TOO_LARGE)
            if len(buffer) < FRAME_HEADER_BYTES:
                return out
            length = frame_length(bytes(buffer[:FRAME_HEADER_BYTES]))
            if length > MAX_REQUEST_BYTES:
                del buffer[:FRAME_HEADER_BYTES]
                if length > MAX_DISCARD_BYTES:
                    buffer.clear()
                    self.closed = True
                    out.append(TOO_LARGE_CLOSE)
                    return out
                self._discard = length
                continue
            end = FRAME_HEADER_BYTES + length
            if len(buffer) < end:
                return out
            out.append(bytes(buffer[FRAME_HEADER_BYTES:end]))
            del buffer[:end]


class Oversized:
    """A marker in :meth:`Framer.feed`'s output: an oversized frame, owed ``InputTooLarge``."""

    __slots__ = ()


TOO_LARGE = Oversized()
TOO_LARGE_CLOSE = Oversized()
