"""The build context: the directory whose files COPY and ADD put into the image, read safely.

Rules:

- Nothing outside the context is ever read. Directories are opened one component at a time, each relative
  to its parent's descriptor with ``O_NOFOLLOW``, so no symbolic link (even one swapped in meanwhile) leads
  out; files are opened ``O_NOFOLLOW | O_NONBLOCK``, must be regular files when opened, and are read only
  up to the size they had, so a FIFO or an endless device is never waited on or drained.
- A source path named in COPY is relative to the context root (a leading ``/`` too); one that climbs out
  with ``..`` is refused. Symbolic links on the way are followed inside the context (at most
  :data:`MAX_SYMLINK_HOPS`); one with an absolute target or leading out is refused, as is a missing or
  ``.dockerignore``d source.
- Inside a copied directory, symbolic links are kept as links (their target is the data) when the target
  is relative and stays inside the context, and refused otherwise. FIFOs, sockets and devices are refused.
- Wildcards in a source (``filepath.Match``: ``*``, ``?``, ``[...]``, ``\\``) are matched one path segment
  at a time, against names the ignore rules keep, in byte order.

Bounds: :data:`MAX_FILES` entries and :data:`MAX_TOTAL_BYTES` bytes copied in all, :data:`MAX_PATH_BYTES`
per path, :data:`MAX_DIR_DEPTH` nested directories, :data:`MAX_WALK_ENTRIES` names looked at (ignored
ones too). Errors are :class:`StepError` lines (the builder names the instruction).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from host.nitro_cli._dockerfile_parse import StepError
from host.nitro_cli._dockerignore import IgnoreRules, go_clean, has_glob, segment_matcher

__all__ = [
    "MAX_DIR_DEPTH",
    "MAX_FILES",
    "MAX_PATH_BYTES",
    "MAX_SYMLINK_HOPS",
    "MAX_TOTAL_BYTES",
    "MAX_WALK_ENTRIES",
    "BuildContext",
    "ContextEntry",
    "NotFoundError",
]

#: Files, directories and links copied into the image, all instructions together.
MAX_FILES = 100_000
#: Bytes of file data copied into the image, all instructions together.
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
#: Bytes in one path, in the context or in the image (PATH_MAX less the NUL and room for the ramdisk's
#: ``rootfs/`` prefix).
MAX_PATH_BYTES = 4064
#: Directories nested inside one another under the context root.
MAX_DIR_DEPTH = 128
#: Symbolic links followed while resolving one source path (Linux's MAXSYMLINKS).
MAX_SYMLINK_HOPS = 40
#: Directory entries looked at, ignored ones included, while walking the context.
MAX_WALK_ENTRIES = 1_000_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_READ_CHUNK = 1024 * 1024


class NotFoundError(StepError):
    """A source path is not in the build context (or ``.dockerignore`` leaves it out)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextEntry:
    """One thing a source brings: ``path`` relative to where it lands (``""`` for a single file source),
    ``kind`` "file", "dir" or "link", ``executable`` (any exec bit set in the context), ``data``."""

    path: str
    kind: str
    executable: bool = False
    data: bytes = b""


def _fsbytes(path: str) -> int:
    return len(path.encode("utf-8", "surrogateescape"))


class BuildContext:
    """The context directory ``root`` with its ignore ``rules``; use as a context manager (it holds the
    root's descriptor)."""

    def __init__(self, root: Path, rules: IgnoreRules) -> None:
        self.rules = rules
        self.files = 0
        self.bytes = 0
        self.visited = 0
        try:
            self._root = os.open(root, _DIR_FLAGS)
        except OSError as exc:
            raise StepError(f"cannot open the build context {root}: {exc.strerror}") from None

    def __enter__(self) -> BuildContext:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._root)

    # -- resolving source paths ---------------------------------------------------------------------

    def resolve(self, source: str, *, honour_ignore: bool = True) -> str:
        """The context path (``""`` for the root) that ``source`` names, symbolic links followed inside."""
        cleaned = go_clean(source.lstrip("/") or ".")
        if cleaned == ".." or cleaned.startswith("../"):
            raise StepError(f"{source[:200]} is outside the build context")
        pending = [part for part in cleaned.split("/") if part not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        mode = stat.S_IFDIR
        while pending:
            part = pending.pop(0)
            if part == "..":
                if not resolved:
                    raise StepError(f"{source[:200]} leads outside the build context")
                resolved.pop()
                continue
            path = "/".join([*resolved, part])
            if _fsbytes(path) > MAX_PATH_BYTES:
                raise StepError(f"{source[:200]}: path over the {MAX_PATH_BYTES}-byte bound")
            try:
                mode = os.stat(path, dir_fd=self._root, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise StepError(f"{source[:200]}: more than {MAX_SYMLINK_HOPS} symbolic links")
                    target = os.readlink(path, dir_fd=self._root)
            except FileNotFoundError:
                raise NotFoundError(f"{source[:200]}: not found in the build context") from None
            except OSError as exc:
                raise StepError(f"{source[:200]}: {exc.strerror}") from None
            if stat.S_ISLNK(mode):
                if target.startswith("/"):
                    raise StepError(
                        f"{source[:200]}: symbolic link {path} -> {target} leads outside the build context"
                    )
                pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            if pending and not stat.S_ISDIR(mode):
                raise StepError(f"{source[:200]}: {path} is not a directory")
            resolved.append(part)
        result = "/".join(resolved)
        # An ignored directory may still hold files that a "!" pattern re-includes: collect() decides.
        maybe_kept = self.rules.has_exceptions and stat.S_ISDIR(mode)
        if honour_ignore and result and self.rules.ignored(result) and not maybe_kept:
            raise NotFoundError(f"{source[:200]}: not found in the build context (excluded by .dockerignore)")
        return result

    def glob(self, pattern: str) -> list[str]:
        """The context paths matching ``pattern`` (wildcards per segment), in byte order of each level."""
        cleaned = go_clean(pattern.lstrip("/") or ".")
        if cleaned == ".." or cleaned.startswith("../"):
            raise StepError(f"{pattern[:200]} is outside the build context")
        candidates = [""]
        for part in cleaned.split("/"):
            if part == ".":
                continue
            found: list[str] = []
            if not has_glob(part):
                found = [f"{c}/{part}" if c else part for c in candidates]
            else:
                try:
                    matcher = segment_matcher(part)
                except re.error:
                    raise StepError(f"syntax error in pattern {pattern[:200]!r}") from None
                for base in candidates:
                    found += [n for n in self._names(base) if matcher.fullmatch(n.rsplit("/", 1)[-1])]
            if len(found) > MAX_FILES:
                raise StepError(f"{pattern[:200]} matches more than {MAX_FILES} paths")
            candidates = found
        return [c for c in candidates if self._exists(c)]

    def _names(self, base: str) -> list[str]:
        try:
            with self._dir(base) as fd:
                names = sorted(os.listdir(fd), key=lambda n: n.encode("utf-8", "surrogateescape"))
        except (StepError, OSError):
            return []
        return [f"{base}/{n}" if base else n for n in names if self._visible(f"{base}/{n}" if base else n)]

    def _visible(self, path: str) -> bool:
        return not self.rules.ignored(path) or self.rules.has_exceptions

    def _exists(self, path: str) -> bool:
        try:
            self.resolve(path)
        except StepError:
            return False
        return True

    @contextmanager
    def _dir(self, path: str) -> Iterator[int]:
        """A descriptor of the context directory ``path``, opened one component at a time."""
        fd = os.dup(self._root)
        try:
            for part in path.split("/") if path else ():
                parent, fd = fd, -1
                try:
                    fd = os.open(part, _DIR_FLAGS, dir_fd=parent)
                finally:
                    os.close(parent)
        except OSError as exc:
            raise StepError(f"{path[:200]}: cannot open directory: {exc.strerror}") from None
        try:
            yield fd
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------------------

    def read_file(self, path: str, *, limit: int) -> bytes:
        """The bytes of the regular file at context path ``path`` (already resolved), at most ``limit``
        (the Dockerfile and the ignore file: read, not copied into the image, so not counted)."""
        parent, _, name = path.rpartition("/")
        with self._dir(parent) as fd:
            return self._read(fd, name, path, limit=limit).data

    def collect(self, path: str) -> list[ContextEntry]:
        """What copying context path ``path`` brings: a file (``path=""``), or a directory's contents."""
        parent, _, name = path.rpartition("/")
        try:
            if path:
                with self._dir(parent) as fd:
                    mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                    if not stat.S_ISDIR(mode):
                        return [self._entry(fd, name, path, "", mode)]
            with self._dir(path) as fd:
                entries = self._walk(fd, path, "", 0)
        except OSError as exc:  # the context changed under us, or cannot be read
            raise StepError(f"{path or '.'}: {exc.filename or ''}: {exc.strerror}") from None
        if not entries and path and self.rules.ignored(path):
            raise NotFoundError(f"{path[:200]}: not found in the build context (excluded by .dockerignore)")
        return entries

    def _walk(self, fd: int, context_path: str, rel: str, depth: int) -> list[ContextEntry]:
        if depth >= MAX_DIR_DEPTH:
            raise StepError(f"{context_path[:200]}: directories nested over {MAX_DIR_DEPTH} deep")
        out: list[ContextEntry] = []
        for name in sorted(os.listdir(fd), key=lambda n: n.encode("utf-8", "surrogateescape")):
            self.visited += 1
            if self.visited > MAX_WALK_ENTRIES:
                raise StepError(f"the build context has more than {MAX_WALK_ENTRIES} entries")
            child = f"{context_path}/{name}" if context_path else name
            child_rel = f"{rel}/{name}" if rel else name
            if _fsbytes(child) > MAX_PATH_BYTES:
                raise StepError(f"{child[:200]}...: path over the {MAX_PATH_BYTES}-byte bound")
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            ignored = self.rules.ignored(child)
            if stat.S_ISDIR(mode):
                if ignored and not self.rules.has_exceptions:
                    continue
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                try:
                    inner = self._walk(sub, child, child_rel, depth + 1)
                finally:
                    os.close(sub)
                if ignored and not inner:
                    continue
                self._count(0)
                out += [ContextEntry(path=child_rel, kind="dir"), *inner]
            elif not ignored:
                out.append(self._entry(fd, name, child, child_rel, mode))
        return out

    def _entry(self, fd: int, name: str, context_path: str, rel: str, mode: int) -> ContextEntry:
        if stat.S_ISLNK(mode):
            target = os.readlink(name, dir_fd=fd)
            landing = posixpath.normpath(posixpath.join(posixpath.dirname(context_path), target))
            if target.startswith("/") or landing == ".." or landing.startswith("../"):
                raise StepError(
                    f"symbolic link {context_path[:200]} -> {target[:200]} points outside the build context"
                )
            self._count(0)
            return ContextEntry(path=rel, kind="link", data=target.encode("utf-8", "surrogateescape"))
        if stat.S_ISREG(mode):
            return self._read(fd, name, context_path, rel)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise StepError(f"{context_path[:200]} is {kind}; only files, directories and links go into an image")

    def _read(self, fd: int, name: str, context_path: str, rel: str = "", *, limit: int = 0) -> ContextEntry:
        try:
            file_fd = os.open(name, _FILE_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise StepError(f"{context_path[:200]}: cannot open: {exc.strerror}") from None
        try:
            info = os.fstat(file_fd)
            if not stat.S_ISREG(info.st_mode):
                raise StepError(f"{context_path[:200]} is not a regular file")
            if not limit:
                self._count(info.st_size)
            elif info.st_size > limit:
                raise StepError(f"{context_path[:200]}: {info.st_size} bytes, over the {limit}-byte bound")
            chunks: list[bytes] = []
            left = info.st_size + 1  # one byte more shows a file that grew while being read
            while left > 0 and (chunk := os.read(file_fd, min(left, _READ_CHUNK))):
                chunks.append(chunk)
                left -= len(chunk)
        except OSError as exc:
            raise StepError(f"{context_path[:200]}: cannot read: {exc.strerror}") from None
        finally:
            os.close(file_fd)
        data = b"".join(chunks)
        if len(data) != info.st_size:
            raise StepError(f"{context_path[:200]} changed size while being read")
        return ContextEntry(path=rel, kind="file", executable=bool(info.st_mode & 0o111), data=data)

    def _count(self, size: int) -> None:
        self.files += 1
        self.bytes += size
        if self.files > MAX_FILES:
            raise StepError(f"more than {MAX_FILES} files copied into the image")
        if self.bytes > MAX_TOTAL_BYTES:
            raise StepError(f"more than {MAX_TOTAL_BYTES} bytes copied into the image")
