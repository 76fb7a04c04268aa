"""asn1crypto as the oracle of our CiphertextForRecipient reader (attestation/_cms_parse.py).

The reader is a hand-rolled BER walker (and a per-shape template check in front of it) that replaced
asn1crypto at run time for speed. Here asn1crypto, an independent CMS parser (RFC 5652 / RFC 8017 / RFC 3565
definitions of its own), reads the same bytes. The property, on the real KMS vectors, on our builder's
output, on valid re-encodings of it and on thousands of seeded mutations of all of these:

    whatever the walker accepts, asn1crypto parses (strict: no trailing bytes, the whole tree decoded), and
    both read every field the same: content type, EnvelopedData version, one KeyTransRecipientInfo v2, its
    rid (subjectKeyIdentifier), the key-encryption algorithm and its OAEP parameters (hash, MGF1 and its
    hash, label), encryptedKey, the encrypted content type, the content-encryption algorithm and its IV,
    and the encrypted content; no originatorInfo, no unprotectedAttrs.

The walker's two paths (the template check and the full walk) are each compared. The converse is not
claimed: the walker refuses much that asn1crypto reads (other shapes, non-DER OIDs, long lengths).
Seeded (``random.Random``), bounded, a few seconds in all.

asn1crypto 1.5.1 does not read two BER forms that X.690 allows and that the walker (rightly) accepts; found
by this test, pinned by :func:`test_the_asn1crypto_gaps_the_fallback_covers`:

- a constructed CHOICE alternative in indefinite length inside a SET OF: a KeyTransRecipientInfo ``30 80``
  in RecipientInfos (it reads the KTRI alone; as a RecipientInfo it runs past the EOC: "Insufficient data");
- a constructed string in definite length (X.690 §8.7.3): ``[0] encryptedContent`` as ``a0 <len>`` of
  OCTET STRING chunks ("method should have been primitive"); it reads the indefinite form ``a0 80``.

For a message asn1crypto refuses, the second opinion is OpenSSL's CMS parser (already the suite's interop
peer, tests/attestation/test_cms.py): ``openssl cms -cmsout`` must read the BER and re-encode it as DER,
and asn1crypto's reading of that DER must agree with the walker as above. OpenSSL (3.0) has a gap of its
own, also valid BER (X.690 §8.1.3.5: the long form is the sender's option): an empty element with a
long-form length that ends a definite-length container (``30 03 04 81 00``: "header too long"; its length
check wants one octet more than there is). Both gaps at once (a definite-length constructed ``[0]`` ending
in such a chunk) do occur, so what OpenSSL is given has every primitive's length octets in minimal form
first (:func:`minimal_primitive_lengths`, schema-free, tokenized by ``asn1crypto.parser``): the form of
length octets carries no meaning, so this changes no field.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms, parser
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from attestation import _cms_parse
from attestation.cms import (
    build_ciphertext_for_recipient,
    decrypt_ciphertext_for_recipient,
    parse_ciphertext_for_recipient,
)
from attestation.errors import DecryptionError

_VECTORS = Path(
    os.environ.get("ATTESTED_RANDOM_VECTORS", Path(__file__).resolve().parents[3] / "shared/test-vectors")
)
KMS_CMS = _VECTORS / "kms-cms"

#: What every accepted message must say, in asn1crypto's words (RFC 5652 §6, RFC 8017 A.2.1, RFC 3565).
EXPECTED = {
    "content_type": "1.2.840.113549.1.7.3",  # envelopedData
    "version": "v2",
    "originator_info": None,
    "recipients": 1,
    "recipient_kind": "ktri",
    "ktri_version": "v2",
    "rid_kind": "subject_key_identifier",
    "key_encryption": "1.2.840.113549.1.1.7",  # id-RSAES-OAEP
    "oaep_hash": "2.16.840.1.101.3.4.2.1",  # sha256
    "oaep_hash_params": None,  # NULL or absent
    "mgf": "1.2.840.113549.1.1.8",  # id-mgf1
    "mgf_hash": "2.16.840.1.101.3.4.2.1",
    "mgf_hash_params": None,
    "label_source": "1.2.840.113549.1.1.9",  # id-pSpecified
    "label": b"",
    "encrypted_content_type": "1.2.840.113549.1.7.1",  # id-data
    "content_encryption": "2.16.840.1.101.3.4.1.42",  # aes256-CBC
    "unprotected_attrs": None,
}
FIELDS = ("key_id", "encrypted_key", "iv", "ciphertext")
#: Bounds of the seeded runs (each case costs ~30 us in the walker and ~0.7 ms in asn1crypto if accepted).
REENCODINGS = 600
MUTATIONS = 4000
#: The least share of mutations the walker must accept for the comparison to mean something.
MIN_ACCEPTED_MUTATIONS = 400


def oracle(blob: bytes) -> dict[str, Any]:
    """asn1crypto's reading of ``blob``: every field above (raises whatever asn1crypto raises)."""
    info = cms.ContentInfo.load(blob, strict=True)
    _ = info.native  # asn1crypto parses lazily: decode the whole tree
    enveloped = info["content"]
    recipients = enveloped["recipient_infos"]
    ktri = recipients[0].chosen
    rid = ktri["rid"]
    key_encryption = ktri["key_encryption_algorithm"]
    oaep = key_encryption["parameters"]
    content_info = enveloped["encrypted_content_info"]
    content_encryption = content_info["content_encryption_algorithm"]
    return {
        "content_type": info["content_type"].dotted,
        "version": enveloped["version"].native,
        "originator_info": enveloped["originator_info"].native,
        "recipients": len(recipients),
        "recipient_kind": recipients[0].name,
        "ktri_version": ktri["version"].native,
        "rid_kind": rid.name,
        "key_encryption": key_encryption["algorithm"].dotted,
        "oaep_hash": oaep["hash_algorithm"]["algorithm"].dotted,
        "oaep_hash_params": oaep["hash_algorithm"]["parameters"].native,
        "mgf": oaep["mask_gen_algorithm"]["algorithm"].dotted,
        "mgf_hash": oaep["mask_gen_algorithm"]["parameters"]["algorithm"].dotted,
        "mgf_hash_params": oaep["mask_gen_algorithm"]["parameters"]["parameters"].native,
        "label_source": oaep["p_source_algorithm"]["algorithm"].dotted,
        "label": oaep["p_source_algorithm"]["parameters"].native,
        "encrypted_content_type": content_info["content_type"].dotted,
        "content_encryption": content_encryption["algorithm"].dotted,
        "unprotected_attrs": enveloped["unprotected_attrs"].native,
        "key_id": rid.chosen.native,
        "encrypted_key": ktri["encrypted_key"].native,
        "iv": content_encryption["parameters"].native,
        "ciphertext": content_info["encrypted_content"].native,
    }


def _length_octets(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def minimal_primitive_lengths(blob: bytes) -> bytes:
    """``blob`` (BER, one-octet tags) with each primitive's length octets minimal; containers keep their
    form (definite ones get their new lengths). Raises ValueError where asn1crypto.parser cannot tokenize."""

    def element(data: bytes) -> tuple[bytes, int]:
        _, method, _, header, contents, trailer = parser.parse(data)
        size = len(header) + len(contents) + len(trailer)
        if method == 0:
            return bytes(header[:1]) + _length_octets(len(contents)) + contents, size
        children = b""
        rest = contents
        while rest:
            child, used = element(rest)
            children += child
            rest = rest[used:]
        if trailer:  # indefinite length: keep it
            return bytes(header[:1]) + b"\x80" + children + b"\x00\x00", size
        return bytes(header[:1]) + _length_octets(len(children)) + children, size

    out, used = element(blob)
    if used != len(blob):
        raise ValueError("trailing bytes")
    return out


def _openssl_der(blob: bytes) -> bytes | None:
    """OpenSSL's DER re-encoding of a CMS ContentInfo in BER, or None if OpenSSL cannot read it."""
    result = subprocess.run(
        ["openssl", "cms", "-cmsout", "-inform", "DER", "-outform", "DER"],
        input=blob,
        capture_output=True,
        check=False,
    )
    return result.stdout if result.returncode == 0 and result.stdout else None


def second_opinion(blob: bytes) -> dict[str, Any]:
    """asn1crypto's reading of ``blob``, or if asn1crypto refuses it, of OpenSSL's DER of it (see above)."""
    try:
        return oracle(blob)
    except Exception:
        der = _openssl_der(minimal_primitive_lengths(blob))
        if der is None:
            raise
        return oracle(der)


def _walker(parse: Callable[[bytes], Any], blob: bytes) -> dict[str, bytes] | None:
    try:
        fields = parse(blob)
    except (DecryptionError, ValueError, IndexError):
        return None
    return {name: getattr(fields, name) for name in FIELDS}


def _full_walk(blob: bytes) -> Any:
    return _cms_parse._walk(blob)[0]


def disagreement(blob: bytes) -> str | None:
    """None if the walker refuses ``blob``, or accepts it and asn1crypto agrees; else what differs.

    Both walker paths: :func:`parse_ciphertext_for_recipient` (the template check when the shape is known)
    and the full BER walk.
    """
    fast = _walker(parse_ciphertext_for_recipient, blob)
    full = _walker(_full_walk, blob)
    if fast != full:
        return f"template check and full walk differ: {fast is not None} vs {full is not None}"
    if full is None:
        return None
    try:
        seen = second_opinion(blob)
    except Exception as error:  # any failure of the oracles on an accepted message is the finding
        return f"accepted by the walker, refused by asn1crypto and OpenSSL: {type(error).__name__}: {error}"
    wrong = [k for k, v in EXPECTED.items() if seen[k] != v]
    wrong += [k for k in FIELDS if seen[k] != full[k]]
    return f"fields differ: {', '.join(wrong)}" if wrong else None


def accepted(blob: bytes) -> bool:
    return _walker(_full_walk, blob) is not None


# -- inputs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    key_id: bytes
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes


_OID_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")
_OID_DATA = bytes.fromhex("06092a864886f70d010701")
_OID_AES256_CBC = bytes.fromhex("060960864801650304012a")
_VERSION_2 = bytes.fromhex("020102")


def _length(n: int, rng: random.Random) -> bytes:
    """Length octets: the DER form, or a non-minimal long form (X.690 §8.1.3.5 allows both in BER)."""
    form = rng.randrange(3)
    if form == 1 and n < 0x100:
        return bytes((0x81, n))
    if form == 2:
        return b"\x82" + n.to_bytes(2, "big")
    return (
        bytes((n,))
        if n < 0x80
        else bytes((0x80 | ((n.bit_length() + 7) // 8),)) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )


def _primitive(tag: int, content: bytes, rng: random.Random) -> bytes:
    return bytes((tag,)) + _length(len(content), rng) + content


def _constructed(tag: int, parts: list[bytes], rng: random.Random) -> bytes:
    content = b"".join(parts)
    if rng.random() < 0.5:  # indefinite length (X.690 §8.1.3.6)
        return bytes((tag, 0x80)) + content + b"\x00\x00"
    return bytes((tag,)) + _length(len(content), rng) + content


def reencode(message: Message, rng: random.Random) -> bytes:
    """``message`` in a random BER form of KMS's shape that the walker's documented rules accept.

    Every container definite or indefinite, primitive lengths minimal or not, the encrypted content
    primitive or in OCTET STRING chunks (some empty), the OAEP identifier any DER spelling of
    OAEP(SHA-256, MGF1-SHA-256, empty label); OIDs and versions stay DER (the walker compares them exactly).
    """
    oaep = rng.choice(sorted(_cms_parse._OAEP_SHA256_ALGIDS))
    ktri = _constructed(
        0x30,
        [
            _VERSION_2,
            _primitive(0x80, message.key_id, rng),
            oaep,
            _primitive(0x04, message.encrypted_key, rng),
        ],
        rng,
    )
    algorithm = _constructed(0x30, [_OID_AES256_CBC, _primitive(0x04, message.iv, rng)], rng)
    if rng.random() < 0.5:
        content = _primitive(0x80, message.ciphertext, rng)
    else:
        cuts = sorted(rng.randrange(len(message.ciphertext) + 1) for _ in range(rng.randrange(4)))
        bounds = [0, *cuts, len(message.ciphertext)]
        chunks = [message.ciphertext[a:b] for a, b in itertools.pairwise(bounds)]
        content = _constructed(0xA0, [_primitive(0x04, chunk, rng) for chunk in chunks], rng)
    encrypted_content_info = _constructed(0x30, [_OID_DATA, algorithm, content], rng)
    enveloped = _constructed(0x30, [_VERSION_2, _constructed(0x31, [ktri], rng), encrypted_content_info], rng)
    return _constructed(0x30, [_OID_ENVELOPED_DATA, _constructed(0xA0, [enveloped], rng)], rng)


def mutate(blob: bytes, rng: random.Random) -> bytes:
    """One random change; positions favour the head, where the structure is (fields fill the rest)."""
    data = bytearray(blob)
    at = rng.randrange(min(len(data), 160)) if rng.random() < 0.6 else rng.randrange(len(data))
    kind = rng.randrange(8)
    if kind == 0:
        data[at] ^= 1 << rng.randrange(8)
    elif kind == 1:
        data[at] = rng.randrange(256)
    elif kind == 2:
        data.insert(at, rng.choice((0x00, 0x80, 0x81, 0x30, 0xA0, 0x04, rng.randrange(256))))
    elif kind == 3:
        del data[at]
    elif kind == 4:
        del data[at:]
    elif kind == 5:
        size = rng.randrange(1, 9)
        data[at:at] = blob[at : at + size]
    elif kind == 6:
        other = rng.randrange(len(data))
        data[at], data[other] = data[other], data[at]
    else:
        data[at] = rng.choice((0x00, 0x80, 0x81, 0x82, 0xFF, data[at] + 1 & 0xFF, data[at] - 1 & 0xFF))
    return bytes(data)


def _vector(name: str) -> tuple[bytes, dict[str, bytes]]:
    blob = (KMS_CMS / f"{name}.ber").read_bytes()
    expected = json.loads((KMS_CMS / f"{name}.expected.json").read_text(encoding="utf-8"))
    return blob, {k: bytes.fromhex(v) for k, v in expected.items()}


@pytest.fixture(scope="module")
def keys() -> dict[int, rsa.RSAPrivateKey]:
    return {
        size: rsa.generate_private_key(public_exponent=65537, key_size=size) for size in (2048, 3072, 4096)
    }


@pytest.fixture(scope="module")
def built(keys: dict[int, rsa.RSAPrivateKey]) -> list[tuple[bytes, bytes, rsa.RSAPrivateKey]]:
    """(CiphertextForRecipient, plaintext, key) from our builder: every key size, edge plaintext sizes."""
    rng = random.Random(14_01)
    out = []
    for key in keys.values():
        for length in (1, 15, 16, 17, 32, 255, 256, 1024, 4095, 4096):
            plaintext = rng.randbytes(length)
            out.append((build_ciphertext_for_recipient(plaintext, key.public_key()), plaintext, key))
    return out


def _messages(built: list[tuple[bytes, bytes, rsa.RSAPrivateKey]]) -> list[Message]:
    blobs = [_vector(name)[0] for name in ("constructed", "primitive")] + [blob for blob, _, _ in built]
    messages = []
    for blob in blobs:
        fields = parse_ciphertext_for_recipient(blob)
        messages.append(Message(fields.key_id, fields.encrypted_key, fields.iv, fields.ciphertext))
    return messages


# -- the comparisons ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["constructed", "primitive"])
def test_the_real_kms_vectors_read_the_same_in_both(name: str) -> None:
    blob, expected = _vector(name)
    assert disagreement(blob) is None
    seen = oracle(blob)
    assert {k: seen[k] for k in FIELDS if k != "key_id"} == expected
    assert {k: seen[k] for k in EXPECTED} == EXPECTED
    assert len(seen["key_id"]) == 32


def test_our_builder_output_reads_the_same_and_decrypts_from_the_oracle_fields(
    built: list[tuple[bytes, bytes, rsa.RSAPrivateKey]],
) -> None:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    for blob, plaintext, key in built:
        assert disagreement(blob) is None
        # Decrypt with what asn1crypto read, by the RFCs' steps: the walker's fields are not used at all.
        seen = oracle(blob)
        cek = key.decrypt(seen["encrypted_key"], oaep)
        decryptor = Cipher(algorithms.AES(cek), modes.CBC(seen["iv"])).decryptor()
        unpadder = sym_padding.PKCS7(128).unpadder()
        padded = decryptor.update(seen["ciphertext"]) + decryptor.finalize()
        assert unpadder.update(padded) + unpadder.finalize() == plaintext
        assert decrypt_ciphertext_for_recipient(blob, key) == plaintext


def test_valid_reencodings_are_accepted_and_read_the_same(
    built: list[tuple[bytes, bytes, rsa.RSAPrivateKey]],
) -> None:
    rng = random.Random(14_02)
    messages = _messages(built)
    refused = []
    for _ in range(REENCODINGS):
        blob = reencode(rng.choice(messages), rng)
        if not accepted(blob):  # inside the walker's documented rules: a refusal is its bug
            refused.append(blob.hex())
        assert disagreement(blob) is None, blob.hex()
    assert refused == []


def test_mutations_the_walker_accepts_read_the_same_in_asn1crypto(
    built: list[tuple[bytes, bytes, rsa.RSAPrivateKey]],
) -> None:
    rng = random.Random(14_03)
    messages = _messages(built)
    bases = [_vector(name)[0] for name in ("constructed", "primitive")] + [blob for blob, _, _ in built]
    findings: list[str] = []
    taken = 0
    for i in range(MUTATIONS):
        base = rng.choice(bases) if i % 2 else reencode(rng.choice(messages), rng)
        blob = mutate(base, rng)
        if rng.random() < 0.3:  # sometimes two changes
            blob = mutate(blob, rng) if blob else blob
        found = disagreement(blob) if blob else None
        taken += accepted(blob) if blob else 0
        if found is not None:
            findings.append(f"{found}: {blob.hex()}")
    assert findings == [], f"{len(findings)} disagreements, first: {findings[0][:400]}"
    assert taken >= MIN_ACCEPTED_MUTATIONS, taken


def test_the_asn1crypto_gaps_the_fallback_covers() -> None:
    """The two BER forms asn1crypto refuses (module docstring); OpenSSL and the walker read them alike.

    If asn1crypto learns them, this fails: then the OpenSSL fallback can go.
    """
    blob, _ = _vector("primitive")
    fields = parse_ciphertext_for_recipient(blob)
    message = Message(fields.key_id, fields.encrypted_key, fields.iv, fields.ciphertext)
    ktri = bytes.fromhex("30820167020102")  # the vector's KTRI head: definite, then version 2
    start = blob.index(ktri)
    length = int.from_bytes(blob[start + 2 : start + 4], "big")
    indefinite_ktri = blob[: start + 1] + b"\x80" + blob[start + 4 : start + 4 + length] + b"\x00\x00"
    indefinite_ktri += blob[start + 4 + length :]  # as long as before: the SET's length holds
    chunks = b"".join(b"\x04\x08" + message.ciphertext[i : i + 8] for i in (0, 8))
    head = b"\x80\x10" + message.ciphertext  # the vector's primitive [0], inside indefinite containers
    definite_chunks = blob.replace(head, b"\xa0" + bytes((len(chunks),)) + chunks)
    for variant in (indefinite_ktri, definite_chunks):
        assert accepted(variant)
        with pytest.raises(ValueError, match=r"Insufficient data|method should have been primitive"):
            oracle(variant)
        assert _openssl_der(variant) is not None
        assert disagreement(variant) is None
    # OpenSSL's own gap, and the normalization that closes it (module docstring).
    assert _openssl_der(bytes.fromhex("3003048100")) is None
    assert minimal_primitive_lengths(bytes.fromhex("3003048100")) == bytes.fromhex("30020400")
    assert minimal_primitive_lengths(bytes.fromhex("3080048200000000")) == bytes.fromhex("308004000000")
