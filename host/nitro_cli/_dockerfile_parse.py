"""Dockerfile syntax: parser directives, comments, line continuations, instructions, flags, exec form.

Rules (docs.docker.com/reference/dockerfile, "Format", "Parser directives"; moby/buildkit
``frontend/dockerfile/parser``):

- The file is UTF-8 (a leading byte-order mark is dropped); lines end in ``\\n``, trailing ``\\r`` dropped.
- Parser directives are ``# key=value`` comment lines at the very top. ``escape`` (``\\`` or a backtick)
  sets the escape character; ``syntax`` and ``check`` are accepted and ignored (there is no frontend to
  pull). The first line that is not a known directive ends them; a directive given twice is refused.
- A line whose first non-blank character is ``#`` is a comment, also inside a continuation (such lines are
  dropped, they do not end the instruction); blank lines inside a continuation are skipped too.
- A line ending in the escape character (trailing blanks allowed) continues on the next line; the escape
  character is removed and the lines are joined with nothing in between.
- An instruction is a keyword (case-insensitive) and its arguments; leading ``--name[=value]`` words are
  its flags (quotes and backslash escapes removed, a lone ``--`` ends them). Each instruction keeps the
  1-based number of its first line.
- Heredocs (``<<EOF`` in RUN, COPY, ADD) are refused: their bodies would be read as instructions.

Bounds: :data:`MAX_DOCKERFILE_BYTES`, :data:`MAX_INSTRUCTIONS`, :data:`MAX_INSTRUCTION_CHARS`.
Every refusal is one :class:`DockerfileError` line naming the file and the line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = [
    "KEYWORDS",
    "MAX_DOCKERFILE_BYTES",
    "MAX_INSTRUCTIONS",
    "MAX_INSTRUCTION_CHARS",
    "DockerfileError",
    "Instruction",
    "ParsedDockerfile",
    "StepError",
    "exec_form",
    "parse_dockerfile",
    "parse_flags",
    "split_words",
]

#: Largest Dockerfile read.
MAX_DOCKERFILE_BYTES = 1024 * 1024
#: Instructions in one Dockerfile.
MAX_INSTRUCTIONS = 4096
#: Characters in one instruction, its continuation lines joined.
MAX_INSTRUCTION_CHARS = 64 * 1024

#: Every keyword Docker knows (so that the rest are "unknown instruction"), upper-case.
KEYWORDS = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
        "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
    }
)  # fmt: skip
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE_RE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")
_HEREDOC_RE = re.compile(r"[0-9]*<<-?[\"']?[A-Za-z_]")
_ESCAPED_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(32), 127)}
_HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})


class DockerfileError(ValueError):
    """The Dockerfile, its ``.dockerignore`` or its build context cannot be carried out: one line that names
    the file and the line (``Dockerfile.enclave:3: ONBUILD is not supported without a Docker engine``).

    Control characters quoted from the input (a newline in a JSON-form path...) are shown escaped, so the
    message stays one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message.translate(_ESCAPED_CONTROLS))


class StepError(Exception):
    """A refusal inside one instruction, not yet located: the builder adds the file, line and keyword."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    """One instruction: ``keyword`` upper-case, ``lineno`` its first line, ``flags`` its leading
    ``--name[=value]`` words, ``args`` the rest (stripped), ``text`` everything after the keyword."""

    keyword: str
    lineno: int
    flags: tuple[str, ...]
    args: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedDockerfile:
    """A Dockerfile's instructions in order, and the escape character its directives chose."""

    name: str
    escape: str
    instructions: tuple[Instruction, ...]


def parse_dockerfile(data: bytes, *, name: str) -> ParsedDockerfile:
    """Split ``data`` (the Dockerfile called ``name``) into instructions; raise :class:`DockerfileError`."""
    if len(data) > MAX_DOCKERFILE_BYTES:
        raise DockerfileError(f"{name}: {len(data)} bytes, over the {MAX_DOCKERFILE_BYTES}-byte bound")
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    text_lines: list[str] = []
    for number, raw in enumerate(lines, start=1):
        try:
            text_lines.append(raw.rstrip(b"\r").decode("utf-8"))
        except UnicodeDecodeError:
            raise DockerfileError(f"{name}:{number}: not UTF-8 text") from None
    escape = _directives(text_lines, name)
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    instructions: list[Instruction] = []
    index = 0
    while index < len(text_lines):
        start = index + 1
        line = text_lines[index].lstrip()
        index += 1
        if line.startswith("#"):
            continue
        line, ended = _trim_continuation(line, continuation)
        while not ended and index < len(text_lines):
            raw_line = text_lines[index]
            index += 1
            stripped = raw_line.lstrip()
            if stripped.startswith("#") or not stripped:
                continue
            part, ended = _trim_continuation(raw_line, continuation)
            line += part
            if len(line) > MAX_INSTRUCTION_CHARS:
                break
        if not line.strip():
            continue
        if len(line) > MAX_INSTRUCTION_CHARS:
            raise DockerfileError(
                f"{name}:{start}: instruction over the {MAX_INSTRUCTION_CHARS}-character bound"
            )
        if len(instructions) == MAX_INSTRUCTIONS:
            raise DockerfileError(f"{name}:{start}: more than {MAX_INSTRUCTIONS} instructions")
        instructions.append(_instruction(line, start, name))
    if not instructions:
        raise DockerfileError(f"{name}: file with no instructions")
    return ParsedDockerfile(name=name, escape=escape, instructions=tuple(instructions))


def _directives(lines: list[str], name: str) -> str:
    escape = "\\"
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        match = _DIRECTIVE_RE.fullmatch(line.strip())
        if match is None or match[1].lower() not in _KNOWN_DIRECTIVES:
            break
        key, value = match[1].lower(), match[2]
        if key in seen:
            raise DockerfileError(f"{name}:{number}: only one {key} parser directive can be used")
        seen.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(
                    f"{name}:{number}: invalid escape token {value!r} does not match ` or \\"
                )
            escape = value
    return escape


def _trim_continuation(line: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    match = continuation.search(line)
    if match is None:
        return line, True
    return line[: match.start()], False


def _instruction(line: str, lineno: int, name: str) -> Instruction:
    parts = line.strip().split(maxsplit=1)
    keyword = parts[0].upper()
    text = parts[1].strip() if len(parts) == 2 else ""
    if keyword not in KEYWORDS:
        raise DockerfileError(f"{name}:{lineno}: unknown instruction: {parts[0][:80]}")
    flags, args = _leading_flags(text)
    if keyword in _HEREDOC_KEYWORDS and any(_HEREDOC_RE.match(word) for word in args.split()):
        raise DockerfileError(f"{name}:{lineno}: {keyword} with a heredoc (<<WORD) is not supported")
    return Instruction(keyword=keyword, lineno=lineno, flags=tuple(flags), args=args.strip(), text=text)


def _leading_flags(text: str) -> tuple[list[str], str]:
    """The leading ``--`` words of ``text`` (quotes and backslashes processed) and the rest, as buildkit's
    ``extractBuilderFlags`` does."""
    flags: list[str] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if not text.startswith("--", pos):
            return flags, text[pos:]
        word, quote, end = [], "", pos
        while end < len(text) and (quote or not text[end].isspace()):
            char = text[end]
            if char == "\\":  # escapes the next character, quoted or not; a trailing one is dropped
                if end + 1 < len(text):
                    end += 1
                    word.append(text[end])
            elif quote:
                if char == quote:
                    quote = ""
                else:
                    word.append(char)
            elif char in "'\"":
                quote = char
            else:
                word.append(char)
            end += 1
        flag = "".join(word)
        if flag == "--":
            return flags, text[end:]
        flags.append(flag)
        pos = end


def parse_flags(instruction: Instruction, allowed: frozenset[str]) -> dict[str, str | None]:
    """The instruction's flags as ``{name: value or None}``; an unknown or repeated flag is a StepError."""
    found: dict[str, str | None] = {}
    for flag in instruction.flags:
        key, sep, value = flag[2:].partition("=")
        if key not in allowed:
            raise StepError(f"unknown flag: --{key[:40]}")
        if key in found:
            raise StepError(f"--{key} given more than once")
        found[key] = value if sep else None
    return found


def exec_form(args: str) -> list[str] | None:
    """The JSON (exec) form of ``args`` if it is one, else None (shell form), as buildkit's ``parseJSON``:
    text starting with ``[`` that parses as a JSON array; an array of anything but strings is refused."""
    text = args.lstrip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise StepError("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def split_words(text: str, escape: str) -> list[str]:
    """Whitespace-separated words of ``text``; quotes and escaped characters stay in the words (buildkit's
    ``parseWords``, used for ENV, LABEL and ARG before each word's own quote and variable processing)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    in_word = blank_ok = False
    pos = 0
    while pos < len(text):
        char = text[pos]
        if quote:
            if char == quote:
                quote = ""
            elif char == escape and quote != "'":
                if pos + 1 == len(text):
                    break
                word.append(char)
                pos += 1
                char = text[pos]
            word.append(char)
        elif char.isspace():
            if in_word and (word or blank_ok):
                words.append("".join(word))
            word, in_word, blank_ok = [], False, False
        else:
            in_word = True
            if char in "'\"":
                quote, blank_ok = char, True
            elif char == escape:
                if pos + 1 == len(text):
                    break
                word.append(char)
                pos += 1
                char = text[pos]
            word.append(char)
        pos += 1
    if in_word and (word or blank_ok):
        words.append("".join(word))
    return words
