"""dice: fair dice rolls from attested randomness, served by an enclave to its parent over vsock.

A hypothetical user's enclave app, the example of ``docs/ci.md``. Inside the enclave,
``python3 /app/dice.py`` listens on vsock port :data:`PORT`. The parent sends one line, ``NdS`` (N dice
of S sides, ``3d6``), and reads one JSON line back: ``{"rolls": [...]}``, or ``{"error": NAME}`` with the
error name KMS sent (``AccessDeniedException`` when its policy does not allow this image).

Rules:

- Every roll comes from KMS ``GenerateRandom`` with the enclave's attestation (``enclave.client("kms")``):
  KMS encrypts the bytes to a key only this enclave holds, so the parent that relays them never sees them.
- Rolls are unbiased (rejection sampling): a random byte ``b`` is used only when ``b < 256 - 256 % S``, so
  each of the S faces gets the same number of byte values; the others are thrown away.
- Every size has a bound: at most :data:`MAX_DICE` dice of 2 to :data:`MAX_SIDES` sides per request, a
  request line of at most :data:`MAX_REQUEST_BYTES` bytes, at most :data:`MAX_DRAW` bytes per KMS call
  (GenerateRandom's NumberOfBytes is 1..1024, botocore's KMS model).
"""

from __future__ import annotations

import json
import re
import socket
import sys
from typing import Any, Protocol

import enclave
from enclave import vsock

#: The vsock port the app listens on inside the enclave.
PORT = 5000
MAX_DICE = 100
#: One byte per roll: at most 256 faces.
MAX_SIDES = 256
MAX_REQUEST_BYTES = 64
#: GenerateRandom's largest NumberOfBytes.
MAX_DRAW = 1024
#: Seconds a parent may take to send its request line.
REQUEST_TIMEOUT_S = 10.0

_REQUEST = re.compile(rb"([0-9]{1,3})d([0-9]{1,3})")


class RandomSource(Protocol):
    """What :func:`roll` needs: a KMS client's ``generate_random`` (the SDK's, or a test's fake)."""

    def generate_random(self, *, NumberOfBytes: int) -> dict[str, Any]: ...  # noqa: N803 - boto3's name


def roll(kms: RandomSource, count: int, sides: int = 6) -> list[int]:
    """``count`` fair rolls of a ``sides``-sided die (faces 1..sides) from ``kms``'s random bytes."""
    if not 1 <= count <= MAX_DICE:
        raise ValueError(f"count must be in 1..{MAX_DICE}, got {count}")
    if not 2 <= sides <= MAX_SIDES:
        raise ValueError(f"sides must be in 2..{MAX_SIDES}, got {sides}")
    limit = 256 - 256 % sides  # bytes 0..limit-1 map evenly onto the faces
    rolls: list[int] = []
    while len(rolls) < count:
        need = count - len(rolls)
        data: bytes = kms.generate_random(NumberOfBytes=min(MAX_DRAW, 2 * need))["Plaintext"]
        rolls += [b % sides + 1 for b in data if b < limit][:need]
    return rolls


def parse_request(line: bytes) -> tuple[int, int]:
    """``b"3d6"`` -> ``(3, 6)``; ValueError (one line) for anything else or out of bounds."""
    found = _REQUEST.fullmatch(line.strip())
    if found is None:
        raise ValueError("expected NdS, e.g. 3d6")
    count, sides = int(found[1]), int(found[2])
    if not 1 <= count <= MAX_DICE or not 2 <= sides <= MAX_SIDES:
        raise ValueError(f"N must be in 1..{MAX_DICE} and S in 2..{MAX_SIDES}")
    return count, sides


def answer(kms: RandomSource, line: bytes) -> dict[str, Any]:
    """The JSON answer to one request line."""
    try:
        count, sides = parse_request(line)
    except ValueError as exc:
        return {"error": "ValidationException", "message": str(exc)}
    try:
        return {"rolls": roll(kms, count, sides)}
    except enclave.ClientError as exc:
        return {"error": exc.code}


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
        chunk = conn.recv(MAX_REQUEST_BYTES + 1)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0][: MAX_REQUEST_BYTES + 1]


def serve(listener: socket.socket, kms: RandomSource) -> None:
    """Answer one request per connection, one connection at a time, until the enclave stops."""
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(REQUEST_TIMEOUT_S)
            try:
                conn.sendall(json.dumps(answer(kms, _read_line(conn))).encode() + b"\n")
            except OSError:
                continue  # a parent that went away or never sent its line: serve the next one


def main() -> int:
    kms = enclave.client("kms")  # the enclave's RSA key pair is made here and never leaves it
    with vsock.listen(PORT) as listener:
        print(f"dice: listening on vsock port {PORT}", flush=True)
        serve(listener, kms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
