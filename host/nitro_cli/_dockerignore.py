"""``.dockerignore``: which files of the build context COPY and ADD may see (docs: "Build context",
".dockerignore files"; moby/patternmatcher ``patternmatcher.go`` and ``ignorefile/ignorefile.go``).

Reading the file (``ignorefile.ReadAll``): a leading UTF-8 byte-order mark is dropped; a line starting with
``#`` is a comment (only in the first column); lines are stripped of blanks and empty ones skipped; a
leading ``!`` marks an exception (re-include); each pattern is cleaned as Go's ``filepath.Clean`` does and a
leading ``/`` is dropped (patterns are relative to the context root). A lone ``!`` is refused.

Matching (``MatchesOrParentMatches``): the patterns are tried in order and the last one that matches
decides: a path is ignored when it, or one of its parent directories, matches an ignore pattern and no
later exception matches it (or one of its parents). Within a pattern ``*`` is any run of characters but
``/``, ``?`` one character but ``/``, ``[...]`` a class (``[^...]`` negated), ``\\`` escapes the next
character, and ``**`` any number of directories, none included (``**/x`` also matches ``x``). A pattern
of only ``**`` and literal text after it matches any path ending in that text, as moby's does.

The Dockerfile and the ignore file are sent to a real builder anyway; here they are read directly, and
COPY honours the ignore list for them as for any file. Bounds: :data:`MAX_IGNORE_BYTES`,
:data:`MAX_IGNORE_PATTERNS`, :data:`MAX_PATTERN_CHARS`.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from dataclasses import dataclass

from host.nitro_cli._dockerfile_parse import DockerfileError

__all__ = [
    "MAX_IGNORE_BYTES",
    "MAX_IGNORE_PATTERNS",
    "MAX_PATTERN_CHARS",
    "IgnoreRules",
    "go_clean",
    "has_glob",
    "parse_dockerignore",
    "segment_matcher",
]

#: Largest ``.dockerignore`` read.
MAX_IGNORE_BYTES = 256 * 1024
#: Patterns in one ``.dockerignore``.
MAX_IGNORE_PATTERNS = 1024
#: Characters in one pattern.
MAX_PATTERN_CHARS = 1024
_GLOB_CHARS = frozenset("*?[\\")


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: no repeated, trailing or ``.`` separators, ``..`` resolved lexically, ``.``
    for the empty path (``posixpath.normpath`` keeps a leading ``//``; Go does not)."""
    cleaned = posixpath.normpath(path) if path else "."
    return cleaned[1:] if cleaned.startswith("//") else cleaned


def has_glob(text: str) -> bool:
    """Whether ``text`` holds a ``filepath.Match`` wildcard (or an escape)."""
    return any(char in _GLOB_CHARS for char in text)


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    exception: bool
    regex: re.Pattern[str] | None  # None: ``suffix`` decides (a ``**``-led literal, moby's suffixMatch)
    suffix: str

    def matches(self, path: str) -> bool:
        if self.regex is None:
            return path.endswith(self.suffix) or (self.suffix.startswith("/") and path == self.suffix[1:])
        return self.regex.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class IgnoreRules:
    """The patterns of one ``.dockerignore`` (empty: nothing is ignored)."""

    patterns: tuple[_Pattern, ...] = ()

    @property
    def has_exceptions(self) -> bool:
        """Whether any ``!`` pattern may re-include something under an ignored directory."""
        return any(p.exception for p in self.patterns)

    def ignored(self, path: str) -> bool:
        """Whether the context path ``path`` (relative, ``/``-separated, cleaned) is left out."""
        parents = path.split("/")[:-1]
        ignored = False
        for pattern in self.patterns:
            if pattern.exception != ignored:
                continue
            match = pattern.matches(path) or any(
                pattern.matches("/".join(parents[: i + 1])) for i in range(len(parents))
            )
            if match:
                ignored = not pattern.exception
        return ignored


def parse_dockerignore(data: bytes, *, name: str = ".dockerignore") -> IgnoreRules:
    """The rules in ``data`` (the ignore file called ``name``); one-line DockerfileError if unusable."""
    if len(data) > MAX_IGNORE_BYTES:
        raise DockerfileError(f"{name}: {len(data)} bytes, over the {MAX_IGNORE_BYTES}-byte bound")
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    patterns: list[_Pattern] = []
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DockerfileError(f"{name}:{number}: not UTF-8 text") from None
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        if len(line) > MAX_PATTERN_CHARS:
            raise DockerfileError(f"{name}:{number}: pattern over the {MAX_PATTERN_CHARS}-character bound")
        if len(patterns) == MAX_IGNORE_PATTERNS:
            raise DockerfileError(f"{name}:{number}: more than {MAX_IGNORE_PATTERNS} patterns")
        exception = line.startswith("!")
        text = line[1:].strip() if exception else line
        if not text:
            raise DockerfileError(f'{name}:{number}: illegal exclusion pattern: "!"')
        text = go_clean(text)
        if len(text) > 1 and text.startswith("/"):
            text = text[1:]
        try:
            patterns.append(_compile(text, exception))
        except re.error:
            raise DockerfileError(f"{name}:{number}: syntax error in pattern {text[:80]!r}") from None
    return IgnoreRules(tuple(patterns))


def _compile(text: str, exception: bool) -> _Pattern:
    out = []
    literal_after_lead = False  # the pattern is "**" + text with no wildcard in it
    pos = 0
    while pos < len(text):
        char = text[pos]
        pos += 1
        if char == "*" and text.startswith("*", pos):
            pos += 1
            if text.startswith("/", pos):
                pos += 1
            out.append(".*" if pos == len(text) else "(?:.*/)?")
            literal_after_lead = len(out) == 1
            continue
        literal_after_lead = literal_after_lead and char not in "*?[]\\"
        out.append(_glob_char(char, text, pos))
        if char == "\\" and pos < len(text):
            pos += 1
    if literal_after_lead and len(out) > 1:
        return _Pattern(text, exception, None, text[2:])
    return _Pattern(text, exception, _regex("".join(out)), "")


def _glob_char(char: str, text: str, pos: int) -> str:
    """The regex for one pattern character (``*`` and ``?`` stop at ``/``; ``\\`` escapes ``text[pos]``)."""
    if char == "*":
        return "[^/]*"
    if char == "?":
        return "[^/]"
    if char in "[]^-":
        return char
    if char == "\\":
        return re.escape(text[pos]) if pos < len(text) else re.escape("\\")
    return re.escape(char)


def _regex(source: str) -> re.Pattern[str]:
    # A class like "[[a]" warns (a possible nested set) in Python but is valid in Go; the compiled meaning
    # is the same, so the warning is not the user's problem.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile(source)


def segment_matcher(pattern: str) -> re.Pattern[str]:
    """One path segment's ``filepath.Match`` pattern (COPY/ADD source wildcards) as a regex; raises
    ``re.error`` when the pattern is malformed."""
    out = []
    pos = 0
    while pos < len(pattern):
        char = pattern[pos]
        pos += 1
        out.append(_glob_char(char, pattern, pos))
        if char == "\\" and pos < len(pattern):
            pos += 1
    return _regex("".join(out))
