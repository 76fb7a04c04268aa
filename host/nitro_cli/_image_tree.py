"""The image's root filesystem as the Dockerfile builds it: paths to (mode, data), then sorted cpio entries.

Rules: paths are relative to the image root (no leading ``/``), cleaned; every parent of every entry is a
directory, created ``0o755`` when missing; a later copy replaces a file or link at the same path and merges
into a directory there, but a file never replaces a directory nor a directory a file, and nothing is
copied through a symbolic link (the image's own links are not followed here). Modes are whole
``st_mode`` values; ownership and times are not kept (the cpio writer sets them to 0).
Entries come out sorted by the bytes of their paths, so the same tree gives the same archive anywhere.
"""

from __future__ import annotations

import stat

from attestation.cpio import CpioEntry
from host.nitro_cli._build_context import MAX_FILES, MAX_PATH_BYTES
from host.nitro_cli._dockerfile_parse import StepError

__all__ = ["DIR_MODE", "LINK_MODE", "ImageTree"]

DIR_MODE = stat.S_IFDIR | 0o755
LINK_MODE = stat.S_IFLNK | 0o777


def _key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


class ImageTree:
    """A mutable root filesystem (see the module rules)."""

    def __init__(self) -> None:
        self._nodes: dict[str, tuple[int, bytes]] = {}

    def is_dir(self, path: str) -> bool:
        node = self._nodes.get(path)
        return path == "" or (node is not None and stat.S_ISDIR(node[0]))

    def mkdir(self, path: str) -> None:
        """Create directory ``path`` and its parents (those already there are kept)."""
        if not path:
            return
        if len(_key(path)) > MAX_PATH_BYTES:
            raise StepError(f"/{path[:200]}...: path over the {MAX_PATH_BYTES}-byte bound")
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            prefix = "/".join(parts[:end])
            node = self._nodes.get(prefix)
            if node is None:
                self._add(prefix, DIR_MODE, b"")
            elif stat.S_ISLNK(node[0]):
                raise StepError(
                    f"/{prefix} is a symbolic link in the image; copying through it is not supported"
                )
            elif not stat.S_ISDIR(node[0]):
                raise StepError(f"/{prefix} is a file in the image, not a directory")

    def put(self, path: str, mode: int, data: bytes) -> None:
        """Place a regular file or a symbolic link (``mode`` says which) at ``path``."""
        parent, _, _ = path.rpartition("/")
        self.mkdir(parent)
        node = self._nodes.get(path)
        if node is not None and stat.S_ISDIR(node[0]):
            raise StepError(f"cannot replace the directory /{path[:200]} with a file")
        self._add(path, mode, data)

    def _add(self, path: str, mode: int, data: bytes) -> None:
        if len(_key(path)) > MAX_PATH_BYTES:
            raise StepError(f"/{path[:200]}...: path over the {MAX_PATH_BYTES}-byte bound")
        if path not in self._nodes and len(self._nodes) >= MAX_FILES:
            raise StepError(f"more than {MAX_FILES} entries in the image")
        self._nodes[path] = (mode, data)

    def entries(self) -> tuple[CpioEntry, ...]:
        """The tree as cpio entries sorted by path bytes."""
        return tuple(
            CpioEntry(path=path, mode=mode, data=data)
            for path, (mode, data) in sorted(self._nodes.items(), key=lambda item: _key(item[0]))
        )
