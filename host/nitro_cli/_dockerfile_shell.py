"""Variable substitution and quote removal in Dockerfile words (docs: "Environment replacement"; moby/buildkit
``frontend/dockerfile/shell/lex.go``, ``ProcessWord``).

Rules:

- ``$name`` and ``${name}`` are replaced by the variable's value, or nothing when it is unset. A name is
  letters, digits and ``_``; a leading digit run or one of ``@*#?-$!`` is a name of its own (always unset
  here). A ``$`` not followed by a name stays ``$``.
- ``${name:-word}`` is ``word`` when the variable is unset or empty, ``${name:+word}`` is ``word`` when it
  is set and not empty (else nothing), ``${name:?word}`` refuses an unset or empty variable with ``word``
  as the message. Without the colon (``${name-word}``, ``${name+word}``, ``${name?word}``) only "unset"
  counts. ``word`` is itself processed (quotes, escapes, nested substitutions).
- Single quotes keep everything up to the next ``'``. Double quotes keep everything up to the next
  unescaped ``"`` but still substitute; inside them the escape character escapes only ``"``, ``$`` and
  itself. Outside quotes it escapes any character (and is dropped at the end of the word).
- The pattern forms (``${name#pattern}``, ``%``, ``/``) are refused with one line: they are rare in images
  and their matching rules are the shell's, not worth a second glob engine here.

Bounds: a word's result is at most :data:`MAX_WORD_CHARS` characters and substitutions nest at most
:data:`MAX_NESTING` deep. Errors are :class:`StepError` (the builder adds the Dockerfile's line).
"""

from __future__ import annotations

from collections.abc import Mapping

from host.nitro_cli._dockerfile_parse import StepError

__all__ = ["MAX_NESTING", "MAX_WORD_CHARS", "process_word"]

#: Characters in one processed word (an ENV value, a path, a label).
MAX_WORD_CHARS = 64 * 1024
#: ``${a:-${b:-...}}`` nesting depth.
MAX_NESTING = 16
_SPECIAL_NAMES = "@*#?-$!"


def process_word(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """``word`` with its quotes removed, escapes resolved and variables from ``env`` substituted."""
    return _Lexer(word, env, escape).run(None, 0)


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        self.pos += 1
        return char

    def run(self, stop: str | None, depth: int) -> str:
        out: list[str] = []
        size = 0
        while self.pos < len(self.text):
            char = self.peek()
            if stop is not None and char == stop:
                self.pos += 1
                return "".join(out)
            if char == "$":
                piece = self.dollar(depth)
            elif char == "'":
                piece = self.single_quoted()
            elif char == '"':
                piece = self.double_quoted(depth)
            else:
                self.pos += 1
                if char == self.escape:
                    if self.pos == len(self.text):
                        break
                    char = self.take()
                piece = char
            out.append(piece)
            size += len(piece)
            if size > MAX_WORD_CHARS:
                raise StepError(f"a substituted word is over the {MAX_WORD_CHARS}-character bound")
        if stop is not None:
            raise StepError("syntax error: missing '}'")
        return "".join(out)

    def single_quoted(self) -> str:
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise StepError("unexpected end of statement while looking for matching single-quote")
        piece = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return piece

    def double_quoted(self, depth: int) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise StepError("unexpected end of statement while looking for matching double-quote")
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "$":
                out.append(self.dollar(depth))
                continue
            self.pos += 1
            if char == self.escape and self.peek() in ('"', "$", self.escape) and self.peek():
                char = self.take()
            out.append(char)

    def name(self) -> str:
        start = self.pos
        char = self.peek()
        if char.isdigit():
            while self.peek().isdigit():
                self.pos += 1
            return self.text[start : self.pos]
        if char and char in _SPECIAL_NAMES:
            self.pos += 1
            return char
        while (char := self.peek()) and (char.isalnum() or char == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def dollar(self, depth: int) -> str:
        self.pos += 1
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.pos += 1
        char = self.peek()
        if not char:
            raise StepError("syntax error: missing '}'")
        if char in "{}:":
            raise StepError("syntax error: bad substitution")
        name = self.name()
        char = self.take()
        if char == "}":
            return self.env.get(name, "")
        if not char:
            raise StepError("syntax error: missing '}'")
        if depth >= MAX_NESTING:
            raise StepError(f"substitutions nested more than {MAX_NESTING} deep")
        colon = char == ":"
        modifier = self.take() if colon else char
        if modifier not in ("-", "+", "?"):
            shown = f"{':' if colon else ''}{modifier}"
            raise StepError(f"unsupported modifier ({shown}) in substitution ${{{name}{shown}...}}")
        word = self.run("}", depth + 1)
        value = self.env.get(name)
        present = bool(value) if colon else value is not None
        if modifier == "-":
            return value if present and value is not None else word
        if modifier == "+":
            return word if present else ""
        if not present or value is None:
            reason = "is not allowed to be empty" if colon else "is not allowed to be unset"
            raise StepError(f"{name}: {word or reason}")
        return value
