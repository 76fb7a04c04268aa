"""A Recipient document's base64 text, decoded mostly from a remembered text: GenerateRandom's fast path.

:func:`decode_document_text` equals ``base64.b64decode(text, validate=True)`` (None where that raises). It
is separate from :mod:`kms.operations` because it knows nothing of the KMS model: it is a cache keyed by
the layout of an NSM attestation document (aws-facts §2), which only the speed of the usual request needs.

An enclave's documents differ in the timestamp and the signature only (:mod:`attestation.document`), so
their base64 texts are equal but for the characters over those bytes. Strict base64 is decoded in
4-character groups, left to right: a text cut at group boundaries, every piece but the last without "=",
decodes (strictly) to the pieces' decodings joined. So a text that has a remembered text's first piece (up
to the timestamp's group) and middle piece (the certificates, keys, PCRs: ~90% of it) is decoded from the
two short pieces between; anything else is decoded whole. tests/kms/test_document_text.py compares the two.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["DOCUMENT_TEXT_CACHE_SIZE", "TEXTS", "decode_document_text", "from_text_template", "remember_text"]

#: Bound on remembered texts (entries: ~6 KB of base64 text and ~4.5 KB of its bytes).
DOCUMENT_TEXT_CACHE_SIZE = 64
#: Characters of a text that select its template (the COSE head and the start of the module ID).
_TEXT_KEY_CHARS = 96
#: The timestamp is in the first bytes of an NSM document; the signature is its last 98 (``58 60`` + r||s).
_TIMESTAMP_KEY = b"\x69timestamp"
_TIMESTAMP_SEARCH_BYTES = 256
_TIMESTAMP_ITEM_BYTES = 9
_SIGNATURE_ITEM_BYTES = 98
#: Key -> (first piece, its bytes, middle start, middle piece, its bytes, middle end, text length).
TEXTS: dict[str, tuple[str, bytes, int, str, bytes, int, int]] = {}


def decode_document_text(text: str) -> bytes | None:
    """``base64.b64decode(text, validate=True)``, None where that raises; remembers a text decoded whole."""
    blob = from_text_template(text)
    if blob is None:
        try:
            blob = base64.b64decode(text, validate=True)
        except ValueError:  # binascii.Error is one
            return None
        remember_text(text, blob)
    return blob


def from_text_template(text: str) -> bytes | None:
    """``base64.b64decode(text, validate=True)`` for a text of a remembered shape; None otherwise."""
    known = TEXTS.get(text[:_TEXT_KEY_CHARS])
    if known is None:
        return None
    first, first_bytes, start, middle, middle_bytes, end, length = known
    if len(text) != length or not text.startswith(first) or not text.startswith(middle, start):
        return None
    between = text[len(first) : start]
    if "=" in between:  # padding only in the last piece
        return None
    try:
        return b"".join(
            (
                first_bytes,
                binascii.a2b_base64(between, strict_mode=True),
                middle_bytes,
                binascii.a2b_base64(text[end:], strict_mode=True),
            )
        )
    except ValueError:  # binascii.Error, or a character that is not ASCII
        return None  # the whole text's decode says so


def remember_text(text: str, blob: bytes) -> None:
    """Remember ``text`` (which decoded strictly to ``blob``) cut around its timestamp and signature."""
    at = blob.find(_TIMESTAMP_KEY, 0, _TIMESTAMP_SEARCH_BYTES)
    if at < 0 or type(text) is not str:
        return
    # Group boundaries (3 bytes, 4 characters) at or before the timestamp, after it, before the signature.
    first_end = (at + len(_TIMESTAMP_KEY)) // 3
    middle_start = (at + len(_TIMESTAMP_KEY) + _TIMESTAMP_ITEM_BYTES + 2) // 3
    middle_end = (len(blob) - _SIGNATURE_ITEM_BYTES) // 3
    if not _TEXT_KEY_CHARS <= 4 * first_end < 4 * middle_start < 4 * middle_end < len(text):
        return
    first = text[: 4 * first_end]
    middle = text[4 * middle_start : 4 * middle_end]
    if "=" in first or "=" in middle:
        return
    if len(TEXTS) >= DOCUMENT_TEXT_CACHE_SIZE:
        del TEXTS[next(iter(TEXTS))]
    TEXTS[text[:_TEXT_KEY_CHARS]] = (
        first,
        blob[: 3 * first_end],
        4 * middle_start,
        middle,
        blob[3 * middle_start : 3 * middle_end],
        4 * middle_end,
        len(text),
    )
