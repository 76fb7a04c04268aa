"""The leak scan: find any of thousands of secret values, by value, in hundreds of megabytes, in seconds.

What is searched for (a *needle* is one value in one written form):

- every plaintext a client received (raw bytes, hex lower and upper case, base64 and its URL-safe form);
- every secret: each client's RSA private key (its private exponent and primes in the same forms, and the
  base64 of its PKCS#8 DER past the header every RSA key shares, as a PEM would hold it), kms-sim's secret
  access key, each key-store password. A secret may be exempt in the one file that is its home
  (kms-sim's credentials file holds its secret key by design).

How: every needle is at least :data:`MIN_NEEDLE_BYTES` long, so any occurrence covers a whole
:data:`CHUNK`-byte piece of the haystack that starts at a multiple of :data:`CHUNK`. The table holds every
``CHUNK``-byte slice of every needle at the offsets 0..CHUNK-1; the haystack is cut at multiples of
``CHUNK`` into a set, intersected with the table in C, and each candidate is checked against the whole
needle. Findings name the place and the kind of value, never the value.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["CHUNK", "MIN_NEEDLE_BYTES", "Finding", "Needles", "forms"]

#: Slice length and stride of the scan.
CHUNK = 16
#: The shortest needle the scan is sure to find (any occurrence covers an aligned CHUNK).
MIN_NEEDLE_BYTES = 2 * CHUNK - 1
#: A haystack is scanned in blocks of this size (overlapping by a needle's length).
BLOCK_BYTES = 16 * 1024 * 1024
#: Bound on the longest needle (so blocks overlap enough).
MAX_NEEDLE_BYTES = 4096
#: Bytes every RSA PKCS#8 DER of one size starts with (skipped: shared by every key, not secret).
PKCS8_SHARED_PREFIX = 30


def forms(value: bytes) -> list[bytes]:
    """The written forms of ``value`` searched for: raw, hex, HEX, base64, URL-safe base64 (no padding);
    each once (a value's two base64 forms, or its two hex forms, may be the same bytes)."""
    b64 = base64.b64encode(value).rstrip(b"=")
    written = [value, value.hex().encode(), value.hex().upper().encode(), b64]
    return list(dict.fromkeys([*written, b64.replace(b"+", b"-").replace(b"/", b"_")]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One needle found: where, and what kind of value (never the value)."""

    where: str
    kind: str


class Needles:
    """The values searched for, with their kinds and the files each may live in."""

    def __init__(self) -> None:
        self._table: dict[bytes, list[tuple[int, int]]] = {}
        self._needles: list[bytes] = []
        self._kinds: list[str] = []
        self._homes: list[frozenset[str]] = []
        #: Values searched for, by kind (each value is several needles: its written forms).
        self.values: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._needles)

    def add(self, needle: bytes, kind: str, *, home: Iterable[str] = ()) -> None:
        """Search for ``needle`` (one written form), a ``kind`` of value allowed only in files ``home``."""
        if not MIN_NEEDLE_BYTES <= len(needle) <= MAX_NEEDLE_BYTES:
            raise ValueError(
                f"a needle must be {MIN_NEEDLE_BYTES}..{MAX_NEEDLE_BYTES} bytes, got {len(needle)}"
            )
        index = len(self._needles)
        self._needles.append(needle)
        self._kinds.append(kind)
        self._homes.append(frozenset(home))
        for offset in range(CHUNK):
            self._table.setdefault(needle[offset : offset + CHUNK], []).append((index, offset))

    def add_value(self, value: bytes, kind: str, *, home: Iterable[str] = ()) -> None:
        """Search for every form of ``value`` (:func:`forms`)."""
        self.values[kind] = self.values.get(kind, 0) + 1
        for form in forms(value):
            self.add(form[:MAX_NEEDLE_BYTES], kind, home=home)

    def add_private_key(self, der: bytes, numbers: Iterable[int], kind: str) -> None:
        """An RSA private key: its secret numbers in every form, its DER's base64 past the shared header."""
        for number in numbers:
            self.add_value(number.to_bytes((number.bit_length() + 7) // 8, "big"), f"{kind} number")
        self.values[kind] = self.values.get(kind, 0) + 1
        start = PKCS8_SHARED_PREFIX - PKCS8_SHARED_PREFIX % 3  # base64 of whole 3-byte groups
        self.add(base64.b64encode(der)[start // 3 * 4 :][:MAX_NEEDLE_BYTES], kind)

    def scan(self, data: bytes, where: str) -> tuple[list[Finding], list[Finding]]:
        """The needles in ``data`` (one finding per needle and place): (leaks, those in their own home)."""
        found: dict[int, Finding] = {}
        overlap = MAX_NEEDLE_BYTES
        for start in range(0, max(len(data), 1), BLOCK_BYTES):
            block = data[start : start + BLOCK_BYTES + overlap]
            for index in self._hits(block):
                found.setdefault(index, Finding(where=where, kind=self._kinds[index]))
        leaks = [f for i, f in found.items() if where not in self._homes[i]]
        allowed = [f for i, f in found.items() if where in self._homes[i]]
        return leaks, allowed

    def kinds(self) -> dict[str, int]:
        """How many needles of each kind."""
        out: dict[str, int] = {}
        for kind in self._kinds:
            out[kind] = out.get(kind, 0) + 1
        return out

    def _hits(self, block: bytes) -> Iterator[int]:
        pieces = {block[i : i + CHUNK] for i in range(0, len(block) - CHUNK + 1, CHUNK)}
        for piece in pieces & self._table.keys():
            position = block.find(piece)
            while position >= 0:
                if position % CHUNK == 0:
                    for index, offset in self._table[piece]:
                        needle = self._needles[index]
                        begin = position - offset
                        if begin >= 0 and block[begin : begin + len(needle)] == needle:
                            yield index
                position = block.find(piece, position + 1)
