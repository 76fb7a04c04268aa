"""What every kms-sim operation is made of: its input shape, its handler, and what it acts on.

An :class:`Operation` is the model's input shape (``kms.protocol.Field`` tuple), the IAM action
(``kms:<Operation>``), an optional shortcut validator for the hot path, and two callables:

- ``resolve(backend, members, at)``: the KMS key the request acts on (``None`` for GenerateRandom and the
  custom-key-store operations). The service calls it before authorization, so the key policy and the
  key's ARN take part in the decision; NotFoundException and friends come from here.
- ``also(backend, members, at)`` (optional): the other resources the request affects (an alias ARN, the
  key an alias named before UpdateAlias), each authorized for the same action after the first.
- ``handler(backend, members, recipient, at, key)``: the response members. ``recipient`` is the verified
  Recipient (or None), ``key`` what ``resolve`` returned.

The handlers of each family live in their own module (``kms.operations``: GenerateRandom and the custom
key stores; ``kms.key_admin``: keys, aliases, policies; ``kms.crypto_ops``: Encrypt, Decrypt, data keys,
key agreement) and take a :class:`Backend`, the state they run against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from kms.protocol import Field, validate

if TYPE_CHECKING:
    from kms.keys import Key, KeyRing
    from kms.keystores import KeyStores

__all__ = [
    "KEY_ENCRYPTION_ALGORITHM",
    "MAX_ATTESTATION_DOCUMENT_BYTES",
    "RECIPIENT_FIELD",
    "AlsoResolver",
    "AttestedRecipient",
    "Backend",
    "Handler",
    "Operation",
    "PlainValidator",
    "Resolver",
]

#: RecipientInfo.AttestationDocument is a blob of 1..262144 bytes (``AttestationDocumentType``).
MAX_ATTESTATION_DOCUMENT_BYTES = 262144
#: ``KeyEncryptionMechanism``: the model's one value.
KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"

#: The ``Recipient`` member (``RecipientInfo``) of every operation that takes one: GenerateRandom, Decrypt,
#: GenerateDataKey, GenerateDataKeyPair, DeriveSharedSecret. The service verifies it (step 7) for all of
#: them the same way; RecipientRequest.md (aws-nitro-enclaves-sdk-c) makes both members required.
RECIPIENT_FIELD = Field(
    name="Recipient",
    kind="structure",
    members=(
        Field(name="KeyEncryptionAlgorithm", kind="string", enum=(KEY_ENCRYPTION_ALGORITHM,), required=True),
        Field(
            name="AttestationDocument",
            kind="blob",
            minimum=1,
            maximum=MAX_ATTESTATION_DOCUMENT_BYTES,
            required=True,
        ),
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestedRecipient:
    """What a verified Recipient contributes: identity for policy and audit, and the key to encrypt to."""

    module_id: str
    pcrs: Mapping[int, bytes]
    public_key: rsa.RSAPublicKey
    key_id: bytes


class Backend(Protocol):
    """The state handlers run against (``kms.operations.Operations`` is the one implementation)."""

    @property
    def keystores(self) -> KeyStores: ...

    @property
    def keys(self) -> KeyRing: ...


Handler = Callable[
    [Backend, dict[str, Any], AttestedRecipient | None, datetime, "Key | None"], dict[str, Any]
]
Resolver = Callable[[Backend, dict[str, Any], datetime], "Key | None"]
#: A shortcut for ``validate(fields, raw)``: the same members for input it recognizes as plainly valid,
#: None for anything else (then ``validate`` runs and words the error).
PlainValidator = Callable[[Mapping[str, object]], dict[str, Any] | None]


#: What else a request acts on, each authorized for the operation's action after the key ``resolve``
#: returned: an alias ARN (a ``str``: the identity policy alone decides, an alias has no policy of its own)
#: or a key (its key policy with the identity policy, as for the first). See :attr:`Operation.also`.
#: A ``(key, action)`` pair is a key authorized for another action (ReEncrypt's destination: kms:ReEncryptTo).
AlsoResolver = Callable[[Backend, dict[str, Any], datetime], "tuple[str | Key | tuple[Key, str], ...]"]


def _no_key(backend: Backend, members: dict[str, Any], at: datetime) -> Key | None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    fields: tuple[Field, ...]
    handler: Handler
    #: The IAM action name on the key ``resolve`` returns: ``kms:<Operation>`` unless set (filled in by
    #: ``kms.operations.OPERATIONS``; ReEncrypt's is kms:ReEncryptFrom).
    action: str = ""
    plain: PlainValidator | None = None
    resolve: Resolver = _no_key
    #: The request carries a new key policy (``Policy``) that must pass the lockout safety check unless
    #: ``BypassPolicyLockoutSafetyCheck`` is true (CreateKey, PutKeyPolicy): the service checks it with
    #: the caller's identity, which handlers do not see.
    checks_lockout: bool = False
    #: The other resources the request affects, each of which the caller needs the action on too (None:
    #: only the key ``resolve`` returns). AWS authorizes CreateAlias and DeleteAlias on the alias as well
    #: as on its key, UpdateAlias on the alias and on both its old and new key (KMS developer guide,
    #: "Controlling access to aliases").
    also: AlsoResolver | None = None

    def members(self, raw: Mapping[str, object]) -> dict[str, Any]:
        """``validate(self.fields, raw)``, by the shortcut when it applies."""
        if self.plain is not None:
            members = self.plain(raw)
            if members is not None:
                return members
        return validate(self.fields, raw)
