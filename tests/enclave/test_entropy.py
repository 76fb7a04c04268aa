"""seed_entropy: NSM GetRandom in <= 256-byte chunks, credited with RNDADDENTROPY, or a clear error."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from enclave import _entropy
from enclave.errors import EntropyError


def _pool(tmp_path: Path) -> Path:
    path = tmp_path / "pool"  # a regular file: open() works, the ioctl does not
    path.touch()
    return path


class ChunkNSM:
    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.calls = 0

    def attestation(self, *, user_data=None, nonce=None, public_key=None) -> bytes:
        raise AssertionError("not used")

    def get_random(self) -> bytes:
        self.calls += 1
        return bytes([self.calls]) * self.size


def test_chunks_and_ioctl_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, bytes]] = []
    monkeypatch.setattr(_entropy.fcntl, "ioctl", lambda fd, req, arg: seen.append((req, arg)))
    nsm = ChunkNSM()
    assert _entropy.seed_entropy(600, nsm=nsm, device=_pool(tmp_path)) == 600
    assert nsm.calls == 3
    assert [req for req, _ in seen] == [_entropy.RNDADDENTROPY] * 3
    # struct rand_pool_info { int entropy_count (bits); int buf_size (bytes); __u32 buf[]; }
    sizes = [int.from_bytes(arg[4:8], "little") for _, arg in seen]
    assert sizes == [256, 256, 88]
    assert [int.from_bytes(arg[:4], "little") for _, arg in seen] == [2048, 2048, 704]
    assert seen[2][1][8:] == bytes([3]) * 88


def test_not_permitted_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, req: int, arg: bytes) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(_entropy.fcntl, "ioctl", refuse)
    with pytest.raises(EntropyError, match=r"not permitted \(RNDADDENTROPY needs CAP_SYS_ADMIN\)"):
        _entropy.seed_entropy(32, nsm=ChunkNSM(), device=_pool(tmp_path))


def test_not_a_random_device(tmp_path: Path) -> None:
    with pytest.raises(EntropyError, match="refused RNDADDENTROPY"):
        _entropy.seed_entropy(32, nsm=ChunkNSM(), device=_pool(tmp_path))


def test_empty_nsm_answer(tmp_path: Path) -> None:
    with pytest.raises(EntropyError, match="no random bytes"):
        _entropy.seed_entropy(32, nsm=ChunkNSM(size=0), device=_pool(tmp_path))


def test_bounds() -> None:
    with pytest.raises(ValueError, match="n must be"):
        _entropy.seed_entropy(-1, nsm=ChunkNSM())
