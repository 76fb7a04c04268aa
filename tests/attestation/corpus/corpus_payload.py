"""Corpus scenarios in the document's bytes: every payload field removed, duplicated, retyped, oversized and
mutated; the COSE_Sign1 signature and headers tampered with.

"Re-signed" means signed again by the genuine leaf key, so that only the named fault is wrong; "mutated"
means changed after signing, the genuine signature kept.
"""

from __future__ import annotations

from typing import Any

import cbor2
from corpus_material import (
    CHAIN,
    DECODE,
    DOC_AT,
    ES384,
    FIELDS,
    POLICY,
    REQUIRED,
    SIGNATURE,
    Bad,
    Base,
    Pairs,
    cose,
    ec_key,
    encode_pairs,
    ms,
    sig_structure,
    signature,
    signed,
)

from attestation.document import PROTECTED_ES384

_NOT_VERIFIED = "COSE_Sign1 signature does not verify"


def _duplicated(pairs: Pairs, name: str) -> Pairs:
    """``name`` twice, with the same value: still two readings of one map."""
    out: Pairs = []
    for k, v in pairs:
        out += [(k, v), (k, v)] if k == name else [(k, v)]
    return out


def _removed(base: Base) -> list[Bad]:
    out = [
        Bad(
            name=f"payload_{field}_missing",
            what=f"required field {field} left out (re-signed)",
            step=DECODE,
            detail=f"lacks required field '{field}'",
            data=base.resigned([(k, v) for k, v in base.pairs if k != field]),
        )
        for field in REQUIRED
    ]
    out += [
        Bad(
            name=f"payload_{field}_null",
            what=f"required field {field} is null (re-signed)",
            step=DECODE,
            detail=f"required field '{field}' is null",
            data=base.resigned(base.changed(**{field: None})),
        )
        for field in ("module_id", "pcrs", "cabundle")
    ]
    out.append(
        Bad(
            name="payload_public_key_missing",
            what="public_key left out (optional for the NSM, required for a KMS Recipient; re-signed)",
            step=POLICY,
            detail="public_key is absent",
            data=base.resigned([(k, v) for k, v in base.pairs if k != "public_key"]),
        )
    )
    out.append(
        Bad(
            name="payload_public_key_null",
            what="public_key null, as the NSM writes it when none was asked for (re-signed)",
            step=POLICY,
            detail="public_key is absent",
            data=base.resigned(base.changed(public_key=None)),
        )
    )
    return out


def _duplicates(base: Base) -> list[Bad]:
    return [
        Bad(
            name=f"payload_{field}_duplicated",
            what=f"{field} twice with the same value (re-signed)",
            step=DECODE,
            detail=f"Duplicate map key: '{field}'",
            data=base.resigned(_duplicated(base.pairs, field)),
        )
        for field in FIELDS
    ]


def _retyped(base: Base) -> list[Bad]:
    doc = dict(base.pairs)
    stamp = ms(DOC_AT)
    text = "must be a byte string, got str"
    table: list[tuple[str, str, str, Any, str]] = [
        ("module_id_retyped", "module_id", "bytes", doc["module_id"].encode(), "a non-empty text string"),
        ("digest_retyped", "digest", "the integer 384", 384, "digest must be 'SHA384', got 384"),
        ("timestamp_retyped", "timestamp", "text", str(stamp), "timestamp must be an unsigned integer"),
        ("timestamp_float", "timestamp", "a float", float(stamp), "timestamp must be an unsigned integer"),
        ("timestamp_negative", "timestamp", "a negative integer", -stamp, "timestamp must be in 1..2^64-1"),
        ("pcrs_retyped", "pcrs", "an array of the values", list(doc["pcrs"].values()), "pcrs must be a map"),
        ("certificate_retyped", "certificate", "hex text", doc["certificate"].hex(), f"certificate {text}"),
        ("cabundle_retyped", "cabundle", "one byte string", doc["cabundle"][0], "cabundle must be an array"),
        ("public_key_retyped", "public_key", "hex text", doc["public_key"].hex(), f"public_key {text}"),
        ("user_data_retyped", "user_data", "an integer", 12345, "user_data must be a byte string, got int"),
        ("nonce_retyped", "nonce", "an array of it", [doc["nonce"]], "nonce must be a byte string, got list"),
    ]
    out = [
        Bad(
            name=f"payload_{name}",
            what=f"{field} as {kind} (re-signed)",
            step=DECODE,
            detail=detail,
            data=base.resigned(base.changed(**{field: value})),
        )
        for name, field, kind, value, detail in table
    ]
    pcrs = doc["pcrs"]
    out.append(
        Bad(
            name="payload_pcrs_key_text",
            what="a PCR index as text, '0' (re-signed)",
            step=DECODE,
            detail="pcrs key '0' is not an index",
            data=base.resigned(base.changed(pcrs={("0" if i == 0 else i): v for i, v in pcrs.items()})),
        )
    )
    out.append(
        Bad(
            name="payload_pcrs_value_text",
            what="PCR0 as hex text (re-signed)",
            step=DECODE,
            detail="pcrs[0] must be 32, 48 or 64 bytes, got str",
            data=base.resigned(base.changed(pcrs={**pcrs, 0: pcrs[0].hex()})),
        )
    )
    return out


def _oversized(base: Base) -> list[Bad]:
    doc = dict(base.pairs)
    pcrs, bundle, leaf = doc["pcrs"], doc["cabundle"], doc["certificate"]
    table: list[tuple[str, Any, str]] = [
        ("module_id", doc["module_id"] + "0" * 64, "module_id is longer than 100 bytes"),
        ("digest", "SHA384" * 200, "digest must be 'SHA384'"),
        ("timestamp", 2**64, "timestamp must be in 1..2^64-1"),
        ("pcrs", {i: bytes(48) for i in range(33)}, "pcrs must be a map of 1..32 entries"),
        ("certificate", leaf + bytes(1025 - len(leaf)), "certificate is 1025 bytes, allowed 1..1024"),
        ("cabundle", [*bundle, *bundle, bundle[0]], "cabundle must hold 1..8 certificates"),
        ("public_key", doc["public_key"] + bytes(731), "public_key is 1025 bytes, allowed 0..1024"),
        ("user_data", b"u" * 1025, "user_data is 1025 bytes, allowed 0..1024"),
        ("nonce", b"n" * 1025, "nonce is 1025 bytes, allowed 0..1024"),
    ]
    out = [
        Bad(
            name=f"payload_{field}_oversized",
            what=f"{field} past its limit in AWS's attestation_process.md (re-signed)",
            step=DECODE,
            detail=detail,
            data=base.resigned(base.changed(**{field: value})),
        )
        for field, value, detail in table
    ]
    out.append(
        Bad(
            name="payload_pcr_value_oversized",
            what="PCR0 of 65 bytes (re-signed)",
            step=DECODE,
            detail="pcrs[0] must be 32, 48 or 64 bytes, got 65",
            data=base.resigned(base.changed(pcrs={**pcrs, 0: pcrs[0] + bytes(17)})),
        )
    )
    out.append(
        Bad(
            name="payload_pcr_index_32",
            what="a PCR index past 31 (re-signed)",
            step=DECODE,
            detail="pcrs key 32 is not an index",
            data=base.resigned(base.changed(pcrs={**pcrs, 32: bytes(48)})),
        )
    )
    empties: list[tuple[str, Any, str]] = [
        ("module_id", "", "module_id must be a non-empty text string"),
        ("pcrs", {}, "pcrs must be a map of 1..32 entries"),
        ("cabundle", [], "cabundle must hold 1..8 certificates"),
        ("certificate", b"", "certificate is 0 bytes, allowed 1..1024"),
    ]
    out += [
        Bad(
            name=f"payload_{field}_empty",
            what=f"{field} empty (re-signed)",
            step=DECODE,
            detail=detail,
            data=base.resigned(base.changed(**{field: value})),
        )
        for field, value, detail in empties
    ]
    return out


def _shape(base: Base) -> list[Bad]:
    return [
        Bad(
            name="payload_unknown_field",
            what="a field the NSM never writes, debug: false (re-signed)",
            step=DECODE,
            detail="unknown field 'debug'",
            data=base.resigned([*base.pairs, ("debug", False)]),
        ),
        Bad(
            name="payload_not_a_map",
            what="the payload an array of the values (re-signed)",
            step=DECODE,
            detail="attestation payload must be a CBOR map",
            data=signed(cbor2.dumps([v for _, v in base.pairs]), base.pki.leaf_key),
        ),
        Bad(
            name="payload_trailing_bytes",
            what="a byte after the map inside the payload (re-signed)",
            step=DECODE,
            detail="trailing bytes",
            data=signed(base.payload + b"\x00", base.pki.leaf_key),
        ),
    ]


def _mutated(base: Base) -> list[Bad]:
    doc = dict(base.pairs)
    key = bytearray(doc["public_key"])
    key[100] ^= 0x01  # inside the modulus: still a well-formed key
    leaf = bytearray(doc["certificate"])
    leaf[-10] ^= 0x01  # inside the leaf's own signatureValue
    zonal = bytearray(doc["cabundle"][2])
    zonal[-10] ^= 0x01
    bundle = doc["cabundle"]
    table: list[tuple[str, Any, str, str]] = [
        ("module_id", doc["module_id"][:-1] + "f", SIGNATURE, _NOT_VERIFIED),
        ("digest", "SHA512", DECODE, "digest must be 'SHA384'"),
        ("timestamp", doc["timestamp"] + 1, SIGNATURE, _NOT_VERIFIED),
        ("pcrs", {**doc["pcrs"], 3: b"\x03" * 48}, SIGNATURE, _NOT_VERIFIED),
        ("certificate", bytes(leaf), CHAIN, "certificate chain does not verify"),
        ("cabundle", [*bundle[:2], bytes(zonal), bundle[3]], CHAIN, "certificate chain does not verify"),
        ("public_key", bytes(key), SIGNATURE, _NOT_VERIFIED),
        ("user_data", bytes(48), SIGNATURE, _NOT_VERIFIED),
        ("nonce", bytes(16), SIGNATURE, _NOT_VERIFIED),
    ]
    return [
        Bad(
            name=f"payload_{field}_mutated",
            what=f"{field} changed after signing (the genuine signature kept)",
            step=step,
            detail=detail,
            data=base.kept_signature(base.changed(**{field: value})),
        )
        for field, value, step, detail in table
    ]


def _cose(base: Base) -> list[Bad]:
    payload, good, sig = base.payload, base.good, base.good_signature
    leaf_key = base.pki.leaf_key
    flipped = bytearray(sig)
    flipped[50] ^= 0x01
    es256 = cbor2.dumps({1: -7})
    kid = cbor2.dumps({1: -35, 4: b"kid"})
    other = encode_pairs(base.changed(nonce=bytes(16)))
    table: list[tuple[str, str, str, str, bytes]] = [
        ("signature_bit_flipped", "one bit of s flipped", SIGNATURE, _NOT_VERIFIED, good[:-96] + flipped),
        (
            "signature_zero",
            "96 zero bytes as the signature",
            SIGNATURE,
            _NOT_VERIFIED,
            good[:-96] + bytes(96),
        ),
        (
            "signature_r_s_swapped",
            "r and s swapped",
            SIGNATURE,
            _NOT_VERIFIED,
            good[:-96] + sig[48:] + sig[:48],
        ),
        (
            "signature_from_other_document",
            "the same leaf's genuine signature of another payload",
            SIGNATURE,
            _NOT_VERIFIED,
            cose(PROTECTED_ES384, {}, payload, signature(other, leaf_key)),
        ),
        (
            "signed_by_unknown_key",
            "signed by a P-384 key the leaf does not hold (chain intact)",
            SIGNATURE,
            _NOT_VERIFIED,
            signed(payload, ec_key("unknown signer")),
        ),
        (
            "signed_by_instance_ca",
            "signed by the instance CA's key instead of the leaf's",
            SIGNATURE,
            _NOT_VERIFIED,
            signed(payload, base.pki.key("instance")),
        ),
        (
            "signature_truncated",
            "a signature of 95 bytes",
            DECODE,
            "ES384 signature must be 96 bytes",
            cose(PROTECTED_ES384, {}, payload, sig[:95]),
        ),
        (
            "signature_der",
            "the signature as a DER ECDSA-Sig-Value, not raw r||s",
            DECODE,
            "ES384 signature must be 96 bytes",
            cose(PROTECTED_ES384, {}, payload, leaf_key.sign(sig_structure(payload), ES384)),
        ),
        (
            "protected_es256",
            "protected header {1: -7} (ES256), signed over",
            DECODE,
            "COSE protected header must be {1: -35}",
            cose(es256, {}, payload, signature(payload, leaf_key, es256)),
        ),
        (
            "protected_extra_kid",
            "protected header with a kid beside alg, signed over",
            DECODE,
            "COSE protected header must be {1: -35}",
            cose(kid, {}, payload, signature(payload, leaf_key, kid)),
        ),
        (
            "protected_empty",
            "an empty protected header, signed over",
            DECODE,
            "COSE protected header: empty input",
            cose(b"", {}, payload, signature(payload, leaf_key, b"")),
        ),
        (
            "protected_not_bstr",
            "the protected header a map, not a byte string",
            DECODE,
            "COSE protected header must be a byte string",
            cose({1: -35}, {}, payload, sig),
        ),
        (
            "unprotected_not_map",
            "the unprotected header an array",
            DECODE,
            "COSE unprotected header must be a map",
            cose(PROTECTED_ES384, [], payload, sig),
        ),
        (
            "payload_not_bstr",
            "the payload embedded as a map, not a byte string",
            DECODE,
            "COSE payload must be a byte string",
            cose(PROTECTED_ES384, {}, cbor2.loads(payload), sig),
        ),
        (
            "tag_98",
            "tagged COSE_Sign (98), not COSE_Sign1",
            DECODE,
            "unexpected CBOR tag 98",
            cose(PROTECTED_ES384, {}, payload, sig, tag=98),
        ),
        (
            "array_3_items",
            "the COSE array without its signature",
            DECODE,
            "expected an array of 4 items",
            cbor2.dumps([PROTECTED_ES384, {}, payload]),
        ),
        (
            "array_5_items",
            "the COSE array with a fifth item",
            DECODE,
            "expected an array of 4 items",
            cbor2.dumps([PROTECTED_ES384, {}, payload, sig, b""]),
        ),
        ("trailing_byte", "a byte after the COSE array", DECODE, "trailing bytes", good + b"\x00"),
        ("truncated", "the document cut in half", DECODE, "invalid CBOR", good[: len(good) // 2]),
    ]
    return [
        Bad(name=f"cose_{name}", what=what, step=step, detail=detail, data=data)
        for name, what, step, detail, data in table
    ]


def scenarios(base: Base) -> list[Bad]:
    """Every scenario of this module, in a fixed order."""
    return [
        *_removed(base),
        *_duplicates(base),
        *_retyped(base),
        *_oversized(base),
        *_shape(base),
        *_mutated(base),
        *_cose(base),
    ]
