"""The Nitro Secure Module, simulated with the real semantics (no I/O; time is an argument).

Semantics (aws-facts.md §3 "PCRs" and "NSM request/response API"; nsm-api ``nsm-test/src/bin/nsm-check.rs``):

- 32 PCRs of 48 bytes (SHA-384). PCRs 0-15 are measured at boot and locked; PCRs 16-31 start as zeros,
  unlocked, and may be extended and locked by the enclave.
- ExtendPCR: ``new = SHA384(old || data)``; a locked PCR answers ``ReadOnlyIndex``.
- LockPCR on 0-15 answers ``ReadOnlyIndex`` (boot PCRs cannot be locked again); locking 16-31 is idempotent.
  LockPCRs locks ``[0, range)`` and answers ``InvalidIndex`` for ``range > 32``.
- Any index ``>= 32`` answers ``InvalidIndex``.
- GetRandom answers 256 bytes (``NSM_RANDOM_REQ_SIZE``).
- Attestation: ``user_data``, ``nonce`` and ``public_key`` of at most 1024 bytes each (else
  ``InputTooLarge``); the document carries every locked PCR, a leaf from the simulated PKI (reused for
  hours, as real ones are), the reference time as ``timestamp``, and is encoded exactly as the newest NSM
  does (:func:`attestation.document.encode_document`).
- Debug mode: PCR0, PCR1 and PCR2 read as zeros; PCR3 and PCR4 keep their values.
- PCR4 is ``SHA384(zeros || instance id)`` as on Nitro unless given; PCR3 (IAM role) is zero unless given.

:meth:`NSM.handle` speaks the wire format of :mod:`attestation.nsm_wire`: a request over 4096 bytes answers
``InputTooLarge``, an undecodable one ``InvalidArgument``; nothing a client sends can raise out of it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from attestation.document import MAX_OPTIONAL_FIELD_BYTES, DocumentEncoder, encode_pcrs
from attestation.errors import MalformedNSMMessageError, NSMError
from attestation.nsm_wire import (
    FRAME_HEADER_BYTES,
    MAX_REQUEST_BYTES,
    Attestation,
    AttestationResponse,
    DescribeNSM,
    DescribeNSMResponse,
    DescribePCR,
    DescribePCRResponse,
    ErrorResponse,
    ExtendPCR,
    ExtendPCRResponse,
    GetRandom,
    GetRandomResponse,
    LockPCR,
    LockPCRResponse,
    LockPCRs,
    LockPCRsResponse,
    Request,
    Response,
    decode_request,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
)
from attestation.pki import MODULE_ID_RE, DocumentSigner, SimulatedPKI, new_module_id

__all__ = [
    "BOOT_LOCKED_PCRS",
    "MAX_PCRS",
    "MAX_RANDOM_BYTES",
    "NSM",
    "PCR_BYTES",
    "decode_request",
    "decode_response",
    "default_boot_pcrs",
    "encode_request",
    "encode_response",
    "simulate_document",
]

# -- Named bounds --------------------------------------------------------------------------------------------
#: ``max_pcrs`` of every Nitro NSM (nsm-check asserts 32).
MAX_PCRS = 32
#: PCRs ``[0, BOOT_LOCKED_PCRS)`` are measured at boot and locked.
BOOT_LOCKED_PCRS = 16
#: SHA-384 PCR size.
PCR_BYTES = 48
#: GetRandom returns this many bytes per call (aws-nitro-enclaves-sdk-c ``NSM_RANDOM_REQ_SIZE``).
MAX_RANDOM_BYTES = 256
#: The PCRs that debug mode zeroes.
DEBUG_ZEROED_PCRS = (0, 1, 2)
#: DescribeNSM version reported by the simulated module.
VERSION = (1, 0, 0)
DIGEST = "SHA384"
#: A leaf with less validity than this left is replaced before signing (verifiers check it a little later).
LEAF_RENEW_MARGIN = timedelta(minutes=30)

_ZERO_PCR = bytes(PCR_BYTES)
#: An attestation answer's CBOR up to the document's byte string (``b""`` encodes as the one byte 0x40).
_ATTESTATION_ANSWER_HEAD = encode_response(AttestationResponse(document=b""))[:-1]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class _SignerState:
    """The leaf in use and what is derived from it, with the window of ``at`` in which it stays current.

    ``[first, last]`` is the intersection of the leaf's reuse window (valid, with :data:`LEAF_RENEW_MARGIN`
    left) and the chain's usable window; inside it, and while the PKI's ``generation`` is unchanged, the
    PKI would hand out the same chain, so no certificate is consulted per document.
    """

    signer: DocumentSigner
    encoder: DocumentEncoder
    generation: int
    first: datetime
    last: datetime


def extend(old: bytes, data: bytes) -> bytes:
    """The NSM's extend operation: ``SHA384(old || data)``."""
    return hashlib.sha384(old + data).digest()


def default_boot_pcrs(module_id: str) -> dict[int, bytes]:
    """Boot measurements for an enclave with no image of its own: stable, non-zero PCR0-2 and PCR4.

    PCR4 is the real formula (the parent instance id extended into zeros); PCR0-2 stand for an image.
    """
    instance_id = module_id.split("-enc", 1)[0]
    pcrs = {i: extend(_ZERO_PCR, f"nitro-sim default image PCR{i}".encode()) for i in (0, 1, 2)}
    pcrs[4] = extend(_ZERO_PCR, instance_id.encode())
    return pcrs


class NSM:
    """One enclave's NSM: a PCR bank and the attestation service, backed by the simulated PKI.

    Thread-safe: one lock guards the PCR bank; signing happens outside it.
    """

    def __init__(
        self,
        *,
        pki: SimulatedPKI,
        module_id: str,
        pcrs: Mapping[int, bytes] | None = None,
        debug: bool = False,
    ) -> None:
        if not isinstance(module_id, str) or not MODULE_ID_RE.fullmatch(module_id):
            raise ValueError(f"module_id must be i-<17 hex>-enc<16 hex>, got {module_id!r}")
        boot = default_boot_pcrs(module_id) if pcrs is None else {4: default_boot_pcrs(module_id)[4]}
        for index, value in (pcrs or {}).items():
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < BOOT_LOCKED_PCRS:
                raise ValueError(f"boot PCR index must be in 0..{BOOT_LOCKED_PCRS - 1}, got {index!r}")
            if not isinstance(value, bytes) or len(value) != PCR_BYTES:
                raise ValueError(f"PCR{index} must be {PCR_BYTES} bytes")
            boot[index] = value
        if debug:
            for index in DEBUG_ZEROED_PCRS:
                boot[index] = _ZERO_PCR
        self._pki = pki
        self.module_id = module_id
        self.debug = debug
        self._pcrs = [boot.get(i, _ZERO_PCR) for i in range(MAX_PCRS)]
        self._locked = set(range(BOOT_LOCKED_PCRS))
        self._mutex = threading.Lock()
        self._signer_mutex = threading.Lock()
        self._signer: _SignerState | None = None
        #: CBOR of the locked PCRs as the document carries them; rebuilt after any extend or lock.
        self._pcrs_cbor: bytes | None = None

    # -- Typed API (raises NSMError with the nsm-api ErrorCode name) -----------------------------------------

    @staticmethod
    def _check_index(index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_PCRS:
            raise NSMError("InvalidIndex", f"PCR index must be in 0..{MAX_PCRS - 1}")

    def describe_pcr(self, index: int) -> DescribePCRResponse:
        self._check_index(index)
        with self._mutex:
            return DescribePCRResponse(lock=index in self._locked, data=self._pcrs[index])

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        self._check_index(index)
        if not isinstance(data, bytes):
            raise NSMError("InvalidArgument", "extend data must be bytes")
        with self._mutex:
            if index in self._locked:
                raise NSMError("ReadOnlyIndex", f"PCR{index} is locked")
            self._pcrs[index] = extend(self._pcrs[index], data)
            self._pcrs_cbor = None
            return self._pcrs[index]

    def lock_pcr(self, index: int) -> None:
        self._check_index(index)
        if index < BOOT_LOCKED_PCRS:
            raise NSMError("ReadOnlyIndex", f"PCR{index} is a boot measurement and cannot be locked")
        with self._mutex:
            self._locked.add(index)
            self._pcrs_cbor = None

    def lock_pcrs(self, range_: int) -> None:
        if isinstance(range_, bool) or not isinstance(range_, int) or not 0 <= range_ <= MAX_PCRS:
            raise NSMError("InvalidIndex", f"lock range must be in 0..{MAX_PCRS}")
        with self._mutex:
            self._locked.update(range(range_))
            self._pcrs_cbor = None

    def describe_nsm(self) -> DescribeNSMResponse:
        with self._mutex:
            locked = tuple(sorted(self._locked))
        major, minor, patch = VERSION
        return DescribeNSMResponse(
            version_major=major,
            version_minor=minor,
            version_patch=patch,
            module_id=self.module_id,
            max_pcrs=MAX_PCRS,
            locked_pcrs=locked,
            digest=DIGEST,
        )

    def get_random(self) -> bytes:
        return os.urandom(MAX_RANDOM_BYTES)

    def attestation(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
        at: datetime,
    ) -> bytes:
        """A fresh attestation document (COSE_Sign1 bytes) issued at ``at``."""
        for name, value in (("user_data", user_data), ("nonce", nonce), ("public_key", public_key)):
            if value is None:
                continue
            if not isinstance(value, bytes):
                raise NSMError("InvalidArgument", f"{name} must be bytes")
            if len(value) > MAX_OPTIONAL_FIELD_BYTES:
                raise NSMError("InputTooLarge", f"{name} is over {MAX_OPTIONAL_FIELD_BYTES} bytes")
        with self._mutex:
            pcrs_cbor = self._pcrs_cbor
            if pcrs_cbor is None:
                pcrs_cbor = self._pcrs_cbor = encode_pcrs({i: self._pcrs[i] for i in self._locked})
        encoder = self._signer_at(at).encoder
        payload = encoder.payload(
            timestamp=(at - _EPOCH) // _MILLISECOND,
            pcrs_cbor=pcrs_cbor,
            public_key=public_key,
            user_data=user_data,
            nonce=nonce,
        )
        return encoder.sign(payload)

    def _signer_at(self, at: datetime) -> _SignerState:
        """The leaf to sign with at ``at``: reused while valid, as the real NSM does.

        Real documents show one leaf serving many documents: nitro-2024-11-14-sui-debug-pcr34 was signed
        2 h 22 min into its leaf's 3-hour validity. A new leaf is issued when the current one has less than
        :data:`LEAF_RENEW_MARGIN` left at ``at``, is not yet valid at ``at``, or its CA chain was renewed
        (or would be at ``at``: a level not usable then).
        """
        current = self._signer  # one read: the state object is immutable and replaced whole
        if (
            current is not None
            and current.first <= at <= current.last
            and current.generation == self._pki.generation
        ):
            return current
        with self._signer_mutex:
            current = self._signer
            if (
                current is not None
                and current.first <= at <= current.last
                and current.generation == self._pki.generation
            ):
                return current
            generation, chain_first, chain_last = self._pki.usable_window()
            signer = self._pki.issue_signer(at=at, module_id=self.module_id)
            leaf = x509.load_der_x509_certificate(signer.certificate)
            first = max(leaf.not_valid_before_utc, chain_first)
            last = min(leaf.not_valid_after_utc - LEAF_RENEW_MARGIN, chain_last)
            if self._pki.generation != generation:
                # The chain was renewed while issuing (at was outside its window, or another thread):
                # serve this document, but look again next time.
                first, last = at, at - LEAF_RENEW_MARGIN
            state = _SignerState(
                signer=signer,
                encoder=DocumentEncoder(
                    module_id=self.module_id,
                    certificate=signer.certificate,
                    cabundle=signer.cabundle,
                    signing_key=signer.private_key,
                ),
                generation=self._pki.generation,
                first=first,
                last=last,
            )
            self._signer = state
            return state

    # -- Wire ----------------------------------------------------------------------------------------------

    def dispatch(self, request: Request, *, at: datetime) -> Response:
        """Serve one decoded request; NSM errors become ``ErrorResponse``."""
        try:
            return self._dispatch(request, at=at)
        except NSMError as exc:
            return ErrorResponse(code=exc.code)

    def _dispatch(self, request: Request, *, at: datetime) -> Response:
        if isinstance(request, DescribePCR):
            return self.describe_pcr(request.index)
        if isinstance(request, ExtendPCR):
            return ExtendPCRResponse(data=self.extend_pcr(request.index, request.data))
        if isinstance(request, LockPCR):
            self.lock_pcr(request.index)
            return LockPCRResponse()
        if isinstance(request, LockPCRs):
            self.lock_pcrs(request.range)
            return LockPCRsResponse()
        if isinstance(request, DescribeNSM):
            return self.describe_nsm()
        if isinstance(request, Attestation):
            document = self.attestation(
                user_data=request.user_data, nonce=request.nonce, public_key=request.public_key, at=at
            )
            return AttestationResponse(document=document)
        if isinstance(request, GetRandom):
            return GetRandomResponse(random=self.get_random())
        raise NSMError("InvalidOperation", f"unsupported request {type(request).__name__}")

    def handle_frame(self, request: bytes, *, at: datetime) -> bytes:
        """``encode_frame(handle(request))``; an attestation request (one per attested call) goes straight
        to :meth:`attestation`, its answer framed in one join instead of three copies (same bytes; tested)."""
        if len(request) <= MAX_REQUEST_BYTES:
            try:
                decoded: Request | None = decode_request(request)
            except MalformedNSMMessageError:
                decoded = None
            if type(decoded) is Attestation:
                try:
                    document = self.attestation(
                        user_data=decoded.user_data, nonce=decoded.nonce, public_key=decoded.public_key, at=at
                    )
                except NSMError as exc:
                    return encode_frame(encode_response(ErrorResponse(code=exc.code)))
                return _frame_attestation_answer(document)
        return encode_frame(self.handle(request, at=at))

    def handle(self, request: bytes, *, at: datetime) -> bytes:
        """Serve one wire request: nsm-api CBOR in, CBOR response out (``{"Error": code}`` on errors)."""
        if len(request) > MAX_REQUEST_BYTES:
            return encode_response(ErrorResponse(code="InputTooLarge"))
        try:
            decoded = decode_request(request)
        except MalformedNSMMessageError:
            return encode_response(ErrorResponse(code="InvalidArgument"))
        return encode_response(self.dispatch(decoded, at=at))


def _frame_attestation_answer(document: bytes) -> bytes:
    """``encode_frame(encode_response(AttestationResponse(document=document)))``, built in one join."""
    size = len(document)  # a document is a few KB: far below 2**32
    if size < 24:
        head = bytes((0x40 + size,))
    elif size < 0x100:
        head = b"\x58" + size.to_bytes(1, "big")
    elif size < 0x10000:
        head = b"\x59" + size.to_bytes(2, "big")
    else:
        head = b"\x5a" + size.to_bytes(4, "big")
    body_size = len(_ATTESTATION_ANSWER_HEAD) + len(head) + size
    return b"".join((body_size.to_bytes(FRAME_HEADER_BYTES, "big"), _ATTESTATION_ANSWER_HEAD, head, document))


def simulate_document(
    home: Path,
    *,
    at: datetime,
    public_key: bytes | None = None,
    user_data: bytes | None = None,
    nonce: bytes | None = None,
    pcrs: Mapping[int, bytes] | None = None,
    debug: bool = False,
    module_id: str | None = None,
) -> bytes:
    """Issue one attestation document from a fresh simulated NSM backed by the PKI in ``home``.

    ``pcrs`` are boot measurements (indices 0-15); omitted ones are as :func:`default_boot_pcrs` gives
    when ``pcrs`` is None, zero otherwise (PCR4 always defaults to the instance id). Raises NSMError for
    oversized fields, ValueError for bad PCRs or module id.
    """
    pki = SimulatedPKI.load_or_create(home, at=at)
    nsm = NSM(
        pki=pki,
        module_id=module_id or new_module_id(pki.instance_id, at=at),
        pcrs=pcrs,
        debug=debug,
    )
    return nsm.attestation(user_data=user_data, nonce=nonce, public_key=public_key, at=at)
