"""Corpus scenarios a parser cannot see: certificates swapped, reordered, expired, with wrong CA flags or
depth, re-issued by an untrusted PKI with the real PCRs; stale and future timestamps; public keys KMS cannot
encrypt to; genuine documents the key policy refuses (debug mode, another image).

Every document here is well-formed; the defective certificates are issued with the simulated PKI's own CA
keys (or the untrusted PKI's), so exactly one thing is wrong with each.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from corpus_material import (
    AT,
    CHAIN,
    DECODE,
    DENIED,
    MAX_AGE_S,
    POLICY,
    Bad,
    Base,
    Extensions,
    Stream,
    ca_below,
    ec_key,
    encode_pairs,
    issue_leaf,
    key_usage,
    leaf_under,
    ms,
    negative_serial,
    reissue,
    rsa_key,
    signed,
    spki,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

_DOES_NOT_VERIFY = "certificate chain does not verify"
_ORDER = "cabundle must be ordered root first"


def _untrusted(base: Base) -> list[Bad]:
    pki, rogue = base.pki, base.rogue
    return [
        Bad(
            name="chain_untrusted_pki_real_pcrs",
            what="the good document (real PCRs) issued by another simulated PKI: same names, other keys",
            step=CHAIN,
            detail="is not a pinned root",
            data=signed(
                encode_pairs(base.changed(certificate=rogue.leaf_der, cabundle=rogue.cabundle)),
                rogue.leaf_key,
            ),
        ),
        Bad(
            name="chain_root_swapped",
            what="cabundle[0] the untrusted root, the rest genuine (re-signed)",
            step=CHAIN,
            detail="is not a pinned root",
            data=base.resigned(base.changed(cabundle=[rogue.der("root"), *pki.cabundle[1:]])),
        ),
        Bad(
            name="chain_leaf_from_untrusted_pki",
            what="the untrusted PKI's leaf, signing, under the genuine cabundle",
            step=CHAIN,
            detail="is not issued by cabundle[3]",
            data=signed(encode_pairs(base.changed(certificate=rogue.leaf_der)), rogue.leaf_key),
        ),
        Bad(
            name="chain_intermediates_from_untrusted_pki",
            what="the genuine root, then the untrusted PKI's intermediates and leaf (the issuer names match)",
            step=CHAIN,
            detail=_DOES_NOT_VERIFY,
            data=signed(
                encode_pairs(
                    base.changed(certificate=rogue.leaf_der, cabundle=[pki.der("root"), *rogue.cabundle[1:]])
                ),
                rogue.leaf_key,
            ),
        ),
    ]


def _order(base: Base) -> list[Bad]:
    pki = base.pki
    bundle = pki.cabundle
    out = [
        Bad(
            name="chain_leaf_swapped_with_instance",
            what="certificate and cabundle[3] swapped (re-signed)",
            step=CHAIN,
            detail=_ORDER,
            data=base.resigned(
                base.changed(certificate=pki.der("instance"), cabundle=[*bundle[:3], pki.leaf_der])
            ),
        )
    ]
    orders: list[tuple[str, list[int], str]] = [
        ("regional_zonal_swapped", [0, 2, 1, 3], _ORDER),
        ("reversed", [3, 2, 1, 0], "is not a pinned root"),
        ("missing_zonal", [0, 1, 3], _ORDER),
        ("root_only", [0], _ORDER),
        ("instance_twice", [0, 1, 2, 3, 3], _ORDER),
    ]
    out += [
        Bad(
            name=f"chain_cabundle_{name}",
            what=f"cabundle entries {order} of root, regional, zonal, instance (re-signed)",
            step=CHAIN,
            detail=detail,
            data=base.resigned(base.changed(cabundle=[bundle[i] for i in order])),
        )
        for name, order, detail in orders
    ]
    return out


def _validity(base: Base) -> list[Bad]:
    pki = base.pki
    bundle = pki.cabundle
    expired_leaf, expired_key = issue_leaf(pki, at=AT - timedelta(hours=4), label="expired leaf")
    future_leaf, future_key = issue_leaf(pki, at=AT + timedelta(hours=1), label="future leaf")
    zonal = reissue(pki.cert("zonal"), pki.key("regional"), not_after=AT - timedelta(seconds=1))
    instance = reissue(pki.cert("instance"), pki.key("zonal"), not_before=AT + timedelta(minutes=1))
    return [
        Bad(
            name="chain_leaf_expired",
            what="a leaf issued 4 hours before the verification time (a 3-hour lifetime)",
            step=CHAIN,
            detail="expired at 2026-04-01T11:00:00Z; checked at 2026-04-01T12:00:00Z",
            data=signed(encode_pairs(base.changed(certificate=expired_leaf)), expired_key),
        ),
        Bad(
            name="chain_leaf_not_yet_valid",
            what="a leaf issued an hour after the verification time",
            step=CHAIN,
            detail="is not valid before 2026-04-01T12:59:57Z",
            data=signed(encode_pairs(base.changed(certificate=future_leaf)), future_key),
        ),
        Bad(
            name="chain_zonal_expired",
            what="the zonal CA re-issued to expire a second before the verification time (re-signed)",
            step=CHAIN,
            detail="expired at 2026-04-01T11:59:59Z",
            data=base.resigned(base.changed(cabundle=[*bundle[:2], zonal, bundle[3]])),
        ),
        Bad(
            name="chain_instance_not_yet_valid",
            what="the instance CA re-issued to start a minute after the verification time (re-signed)",
            step=CHAIN,
            detail="is not valid before 2026-04-01T12:01:00Z",
            data=base.resigned(base.changed(cabundle=[*bundle[:3], instance])),
        ),
    ]


def _flags(base: Base) -> list[Bad]:
    pki = base.pki
    bundle = pki.cabundle
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaves: list[tuple[str, str, str, Extensions, tuple[tuple[x509.ExtensionType, bool], ...]]] = [
        (
            "is_ca",
            "the leaf says CA=true",
            "certificate is a CA",
            {x509.BasicConstraints: (x509.BasicConstraints(ca=True, path_length=None), True)},
            (),
        ),
        (
            "no_basic_constraints",
            "the leaf has no basicConstraints",
            "certificate lacks basicConstraints",
            {x509.BasicConstraints: None},
            (),
        ),
        (
            "no_digital_signature",
            "the leaf's keyUsage lacks digitalSignature",
            "certificate lacks keyUsage digitalSignature",
            {x509.KeyUsage: (key_usage(digital_signature=False, key_cert_sign=False), False)},
            (),
        ),
        (
            "unknown_critical_extension",
            "the leaf carries an unknown critical extension",
            "unknown critical extension 1.3.6.1.4.1.55555.1",
            {},
            ((unknown, True),),
        ),
    ]
    out = [
        Bad(
            name=f"chain_leaf_{name}",
            what=what,
            step=CHAIN,
            detail=detail,
            data=base.resigned(
                base.changed(certificate=reissue(pki.leaf, pki.key("instance"), replace=replace, add=add))
            ),
        )
        for name, what, detail, replace, add in leaves
    ]
    p256 = ec_key("leaf p256", ec.SECP256R1()).public_key()
    out.append(
        Bad(
            name="chain_leaf_p256_key",
            what="the leaf holds a P-256 key",
            step=CHAIN,
            detail="does not hold a P-384 public key",
            data=base.resigned(
                base.changed(certificate=reissue(pki.leaf, pki.key("instance"), public_key=p256))
            ),
        )
    )
    out.append(
        Bad(
            name="chain_leaf_signed_sha256",
            what="the leaf signed with ecdsa-with-SHA256",
            step=CHAIN,
            detail="is not signed with ecdsa-with-SHA384",
            data=base.resigned(
                base.changed(certificate=reissue(pki.leaf, pki.key("instance"), algorithm=hashes.SHA256()))
            ),
        )
    )
    cas: list[tuple[str, str, int, Extensions]] = [
        (
            "instance_not_ca",
            "the instance certificate re-issued with CA=false",
            3,
            {x509.BasicConstraints: (x509.BasicConstraints(ca=False, path_length=None), True)},
        ),
        (
            "instance_no_key_cert_sign",
            "the instance certificate's keyUsage without keyCertSign",
            3,
            {x509.KeyUsage: (key_usage(digital_signature=True, key_cert_sign=False), True)},
        ),
        (
            "zonal_pathlen_zero",
            "the zonal CA re-issued with pathlen 0 (the instance CA below it breaks it)",
            2,
            {x509.BasicConstraints: (x509.BasicConstraints(ca=True, path_length=0), True)},
        ),
    ]
    for name, what, index, replace in cas:
        level = ("root", "regional", "zonal", "instance")[index]
        issuer = ("root", "regional", "zonal", "instance")[index - 1]
        der = reissue(pki.cert(level), pki.key(issuer), replace=replace)
        cabundle = [*bundle[:index], der, *bundle[index + 1 :]]
        out.append(
            Bad(
                name=f"chain_{name}",
                what=what + " (re-signed)",
                step=CHAIN,
                detail=_DOES_NOT_VERIFY,
                data=base.resigned(base.changed(cabundle=cabundle)),
            )
        )
    return out


def _depth(base: Base) -> list[Bad]:
    pki = base.pki
    out = []
    for name, extra, what in (
        ("chain_depth_ca_below_instance", 1, "one more CA below the instance CA (pathlen 0)"),
        (
            "chain_depth_eight_certificates",
            4,
            "a cabundle of 8, the format's maximum: 4 CAs below the instance",
        ),
    ):
        bundle, parent, parent_key = list(pki.cabundle), pki.cert("instance"), pki.key("instance")
        for level in range(extra):
            parent, parent_key = ca_below(parent, parent_key, f"{name}-{level}")
            bundle.append(parent.public_bytes(serialization.Encoding.DER))
        leaf, leaf_key = leaf_under(parent, parent_key, pki.leaf, name)
        out.append(
            Bad(
                name=name,
                what=what,
                step=CHAIN,
                detail=_DOES_NOT_VERIFY,
                data=signed(encode_pairs(base.changed(certificate=leaf, cabundle=bundle)), leaf_key),
            )
        )
    return out


def _not_der(base: Base) -> list[Bad]:
    pki = base.pki
    bundle = pki.cabundle
    pem = pki.cert("zonal").public_bytes(serialization.Encoding.PEM)[:1024]
    return [
        Bad(
            name="chain_leaf_not_der",
            what="certificate is 600 random bytes (re-signed)",
            step=DECODE,
            detail="certificate is not a DER X.509 certificate",
            data=base.resigned(base.changed(certificate=Stream("garbage leaf").bytes(600))),
        ),
        Bad(
            name="chain_cabundle_entry_pem",
            what="cabundle[2] is the zonal certificate's PEM text (re-signed)",
            step=DECODE,
            detail="cabundle[2] is not a DER X.509 certificate",
            data=base.resigned(base.changed(cabundle=[*bundle[:2], pem, bundle[3]])),
        ),
        Bad(
            name="chain_leaf_negative_serial",
            what="the leaf's serial number made negative, RFC 5280 §4.1.2.2 (re-signed)",
            step=DECODE,
            detail="serial number that is not positive",
            data=base.resigned(base.changed(certificate=negative_serial(pki.leaf_der))),
        ),
    ]


def _time(base: Base) -> list[Bad]:
    older = "timestamp: the document is {} s old, over the maximum age of 300 s"
    newer = "timestamp: the document is dated {} s after the verification time"
    table: list[tuple[str, int, str]] = [
        ("stale_one_hour", ms(AT - timedelta(hours=1)), older.format("3600.000")),
        ("stale_just_over_max_age", ms(AT - timedelta(seconds=MAX_AGE_S + 1)), older.format("301.000")),
        ("epoch", ms(datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)), older.format("1775044799.999")),
        ("future_ten_minutes", ms(AT + timedelta(minutes=10)), newer.format("600.000")),
        ("future_far", 2**64 - 1, newer.format("18446742298664752.000")),
    ]
    return [
        Bad(
            name=f"time_{name}",
            what=f"timestamp {stamp} ms (re-signed; the chain valid at the verification time)",
            step=POLICY,
            detail=detail,
            data=base.resigned(base.changed(timestamp=stamp)),
        )
        for name, stamp, detail in table
    ]


def _keys(base: Base) -> list[Bad]:
    recipient = base.recipient.public_key()
    not_spki = "public_key is not a DER SubjectPublicKeyInfo"
    not_rsa = "public_key is not an RSA key"
    pem = recipient.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1 = recipient.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    ed = ed25519.Ed25519PrivateKey.from_private_bytes(Stream("ed25519").bytes(32))
    table: list[tuple[str, str, str, str, Any]] = [
        ("ec_p384", "an EC P-384 SubjectPublicKeyInfo", POLICY, not_rsa, spki(ec_key("recipient p384"))),
        ("ec_p256", "an EC P-256 one", POLICY, not_rsa, spki(ec_key("recipient p256", ec.SECP256R1()))),
        ("ed25519", "an Ed25519 one", POLICY, not_rsa, spki(ed)),
        ("rsa_1024", "an RSA-1024 one", POLICY, "public_key is RSA-1024", spki(rsa_key(1024))),
        (
            "rsa_8192",
            "an RSA-8192 one (1062 bytes: past the field's limit)",
            DECODE,
            "public_key is 1062 bytes, allowed 0..1024",
            spki(rsa_key(8192)),
        ),
        ("garbage", "294 random bytes", POLICY, not_spki, Stream("garbage key").bytes(294)),
        ("empty", "an empty byte string", POLICY, not_spki, b""),
        ("rsa_pkcs1", "the RSA-2048 key as a bare PKCS#1 RSAPublicKey", POLICY, "not a DER-encoded", pkcs1),
        ("rsa_pem", "the RSA-2048 key as PEM text", POLICY, not_spki, pem),
        (
            "rsa_trailing_byte",
            "the RSA-2048 SPKI and one byte more",
            POLICY,
            not_spki,
            spki(base.recipient) + b"\0",
        ),
    ]
    return [
        Bad(
            name=f"key_{name}",
            what=f"public_key is {what} (re-signed)",
            step=step,
            detail=detail,
            data=base.resigned(base.changed(public_key=value)),
        )
        for name, what, step, detail, value in table
    ]


def _policy(base: Base) -> list[Bad]:
    pcrs = base.pki.pcrs
    return [
        Bad(
            name="policy_debug_mode",
            what="a genuine debug-mode document: PCR0-2 zero, PCR3/PCR4 kept",
            step=POLICY,
            detail="the enclave runs in debug mode",
            data=base.resigned(base.changed(pcrs=base.pki.debug_pcrs)),
            kms_error=DENIED,
        ),
        Bad(
            name="policy_other_image",
            what="a genuine document of another image (PCR0 differs)",
            step=POLICY,
            detail="pcrs[0] is " + hashlib.sha384(b"another image").hexdigest(),
            data=base.resigned(base.changed(pcrs={**pcrs, 0: hashlib.sha384(b"another image").digest()})),
            kms_error=DENIED,
        ),
        Bad(
            name="policy_pcr0_missing",
            what="a genuine document without PCR0",
            step=POLICY,
            detail="pcrs[0] is absent",
            data=base.resigned(base.changed(pcrs={i: v for i, v in pcrs.items() if i != 0})),
            kms_error=DENIED,
        ),
    ]


def scenarios(base: Base) -> list[Bad]:
    """Every scenario of this module, in a fixed order."""
    return [
        *_untrusted(base),
        *_order(base),
        *_validity(base),
        *_flags(base),
        *_depth(base),
        *_not_der(base),
        *_time(base),
        *_keys(base),
        *_policy(base),
    ]
