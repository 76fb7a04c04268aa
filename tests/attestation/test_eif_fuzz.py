"""Hypothesis and seeded mutations: the EIF reader, the signature-section decoder and the cpio reader raise
nothing but their documented one-line errors on any input, and accept whole images and archives they wrote."""

from __future__ import annotations

import contextlib
import random
import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.cpio import CpioEntry, CpioError, read_newc, write_newc
from attestation.eif import EifError, build_eif, decode_signature_section, read_eif

FUZZ = settings(max_examples=300, deadline=None)
#: Seeded single-byte mutations of a valid image and archive (each must parse or raise our error).
MUTATIONS = 3000

_members = st.lists(
    st.tuples(
        st.text(alphabet="abcdefgh", min_size=1, max_size=8),
        st.sampled_from([stat.S_IFREG | 0o644, stat.S_IFREG | 0o755, stat.S_IFLNK | 0o777]),
        st.binary(max_size=64),
    ),
    max_size=8,
    unique_by=lambda m: m[0],
)


def _image() -> bytes:
    archive = write_newc([CpioEntry(path="rootfs", mode=stat.S_IFDIR | 0o755)])
    return build_eif(
        kernel=b"k" * 40, cmdline=b"console=ttyS0", ramdisks=[b"boot", archive], metadata={"a": 1}
    )


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_an_eif_error_or_an_image(data: bytes) -> None:
    message = ""
    try:
        read_eif(b".eif" + data)
    except EifError as error:
        message = str(error)
    assert "\n" not in message


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_signature_sections_raise_only_eif_error(data: bytes) -> None:
    with contextlib.suppress(EifError):
        decode_signature_section(data)


@FUZZ
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_are_a_cpio_error_or_members(data: bytes) -> None:
    message = ""
    try:
        read_newc(b"070701" + data)
    except CpioError as error:
        message = str(error)
    assert "\n" not in message


@FUZZ
@given(_members)
def test_archives_round_trip(members: list[tuple[str, int, bytes]]) -> None:
    entries = [CpioEntry(path=name, mode=mode, data=data) for name, mode, data in members]
    assert read_newc(write_newc(entries)) == entries


def test_seeded_mutations_of_an_image_and_an_archive() -> None:
    rng = random.Random(12)
    image = _image()
    archive = write_newc([CpioEntry(path="a", mode=stat.S_IFREG | 0o644, data=b"x" * 50)])
    for original, read, error in ((image, read_eif, EifError), (archive, read_newc, CpioError)):
        for _ in range(MUTATIONS):
            mutated = bytearray(original)
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            with contextlib.suppress(error):
                read(bytes(mutated))  # type: ignore[operator]
