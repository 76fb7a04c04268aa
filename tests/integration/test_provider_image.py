"""The provider's real image with the plugin's fixtures: built from ``Dockerfile.enclave`` by ``nitro-cli``.

``built_enclave`` builds the image, ``kms_sim.set_policy`` allows GenerateRandom only to its PCR0,
``running_enclave`` runs it beside ``vsock_proxy``, and the parent's client (``host.random_client.fetch``)
gets attested bytes, verified against the pinned root, the image's PCR0 and the request's nonce; KMS's audit
shows the attested call. A policy on another PCR0 makes KMS refuse the same enclave: AccessDeniedException.
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from attestation.verify import Verifier
from host.random_client import ProviderError, fetch
from nitro_sim.enclaves import Enclave, Image, copy_build_context
from nitro_sim.procs import live
from nitro_sim.stack import KmsSim, image_policy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
#: The provider's vsock port (attestation.provider_wire.DEFAULT_PORT).
PROVIDER_PORT = 5005
#: Bound on waiting for the enclave's app to listen (never asserted as a time).
WAIT_S = 60.0
OTHER_IMAGE = hashlib.sha384(b"another enclave image").hexdigest()


def _context(dest: Path) -> Path:
    """A copy of the provider image's build context (what build-enclave of the project may read)."""
    return copy_build_context(REPO, dest)


def _fetch(home: Path, enclave: Enclave, pcr0: str) -> Any:
    root = x509.load_pem_x509_certificate((home / "pki" / "root.crt").read_bytes())
    return fetch(
        enclave.cid,
        PROVIDER_PORT,
        number_of_bytes=32,
        pcr0=bytes.fromhex(pcr0),
        verifier=Verifier(roots=[root]),
        at=datetime.now(UTC),
        wait=WAIT_S,
        simulated=True,
    )


def test_the_provider_image_serves_attested_bytes_to_its_pcr0_only(
    built_enclave: Any, running_enclave: Any, kms_sim: KmsSim, nitro_home: Path, tmp_path: Path
) -> None:
    image: Image = built_enclave(_context(tmp_path / "ctx"))
    assert image.eif.is_file()
    assert image.measurements["HashAlgorithm"].startswith("Sha384")
    kms_sim.set_policy(image_policy(image.pcr0))
    enclave: Enclave = running_enclave(image)
    assert enclave.enclave_id.startswith("i-")
    assert enclave.eif == image.eif
    assert enclave.info["EnclaveCID"] == enclave.cid
    assert enclave.info["State"] == "RUNNING"
    assert {k: enclave.measurements[k] for k in ("PCR0", "PCR1", "PCR2")} == {
        k: image.measurements[k] for k in ("PCR0", "PCR1", "PCR2")
    }
    assert enclave.process in live()  # the supervisor is under the safety net
    assert os.environ["NITRO_SIM_HOME"] == str(nitro_home)

    fetched = _fetch(nitro_home, enclave, image.pcr0)
    assert len(fetched.random) == 32
    assert fetched.document.pcrs[0].hex() == image.pcr0
    [record] = [r for r in kms_sim.audit() if r["eventName"] == "GenerateRandom"]
    recipient = record["additionalEventData"]["recipient"]
    assert base64.b64decode(recipient["attestationDocumentEnclaveImageDigest"]).hex() == image.pcr0
    assert "errorCode" not in record

    kms_sim.set_policy(image_policy(OTHER_IMAGE))
    with pytest.raises(ProviderError) as refused:
        _fetch(nitro_home, enclave, image.pcr0)
    assert refused.value.error == "AccessDeniedException"
    assert kms_sim.audit()[-1]["errorCode"] == "AccessDeniedException"
