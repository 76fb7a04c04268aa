"""Dockerfile syntax and word processing, as Docker's reference describes them: directives, comments,
continuations, flags, exec vs shell form, quotes and ``$VAR`` substitution."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.nitro_cli._dockerfile_parse import (
    MAX_DOCKERFILE_BYTES,
    MAX_INSTRUCTIONS,
    DockerfileError,
    Instruction,
    StepError,
    exec_form,
    parse_dockerfile,
    parse_flags,
    split_words,
)
from host.nitro_cli._dockerfile_shell import MAX_NESTING, MAX_WORD_CHARS, process_word

DATA = Path(__file__).parent / "dockerfiles"


def _parse(text: str) -> list[tuple[str, int, str]]:
    parsed = parse_dockerfile(text.encode(), name="Dockerfile")
    return [(i.keyword, i.lineno, i.args) for i in parsed.instructions]


def test_continuations_comments_and_blank_lines_keep_first_line_numbers() -> None:
    parsed = parse_dockerfile((DATA / "continuations.Dockerfile").read_bytes(), name="Dockerfile")
    got = [(i.keyword, i.lineno, i.args) for i in parsed.instructions]
    assert got == [
        ("FROM", 3, "scratch"),
        ("RUN", 5, "echo one     two     three"),  # continuation lines keep their indentation
        ("ENV", 10, "A=1     B=2"),
        ("CMD", 13, '["a",      "b"]'),
        ("LABEL", 16, "x=y"),
    ]


def test_escape_directive_backtick() -> None:
    parsed = parse_dockerfile((DATA / "escape_backtick.Dockerfile").read_bytes(), name="Dockerfile")
    assert parsed.escape == "`"
    got = [(i.keyword, i.lineno, i.args) for i in parsed.instructions]
    # A backslash is an ordinary character now: Windows paths survive, the backtick continues lines.
    assert got == [
        ("FROM", 3, "scratch"),
        ("COPY", 4, "a\\b.txt C:\\app\\"),
        ("RUN", 5, "dir c:\\   && echo x"),
    ]


def test_directives_only_at_the_top_and_case_insensitive() -> None:
    assert parse_dockerfile(b"# ESCAPE = `\nFROM a\n", name="D").escape == "`"
    # After an instruction, a comment, a blank line or an unknown directive it is a plain comment.
    for text in (b"FROM a\n# escape=`\n", b"# hello\n# escape=`\nFROM a\n", b"\n# escape=`\nFROM a\n",
                 b"# foo=bar\n# escape=`\nFROM a\n"):  # fmt: skip
        assert parse_dockerfile(text, name="D").escape == "\\", text
    # syntax= and check= are accepted and ignored.
    assert (
        parse_dockerfile(b"# syntax=docker/dockerfile:1\n# check=skip=all\nFROM a\n", name="D").escape == "\\"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"# escape=x\nFROM a\n", r"^D:1: invalid escape token 'x' does not match ` or \\$"),
        (b"# escape=`\n# escape=\\\nFROM a\n", r"^D:2: only one escape parser directive can be used$"),
        (b"FROM a\nCOPPY x y\n", r"^D:2: unknown instruction: COPPY$"),
        (b"FROM a\nRUN cat <<EOF\nhi\nEOF\n", r"^D:2: RUN with a heredoc \(<<WORD\) is not supported$"),
        (b"FROM a\nCOPY <<-'X' /f\n", r"^D:2: COPY with a heredoc"),
        (b"# only a comment\n\n", r"^D: file with no instructions$"),
        (b"FROM a\n\xff\n", r"^D:2: not UTF-8 text$"),
        (
            b"FROM a\n" + b"LABEL a=" + b"x" * 70000 + b"\n",
            r"^D:2: instruction over the 65536-character bound$",
        ),
    ],
    ids=[
        "bad-escape",
        "two-escapes",
        "unknown",
        "heredoc-run",
        "heredoc-copy",
        "empty",
        "not-utf8",
        "too-long",
    ],
)
def test_refusals_name_the_line(text: bytes, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        parse_dockerfile(text, name="D")


def test_here_string_is_not_a_heredoc() -> None:
    assert _parse("FROM a\nRUN cat <<<word\n")[1] == ("RUN", 2, "cat <<<word")


def test_bounds() -> None:
    with pytest.raises(DockerfileError, match="over the 1048576-byte bound"):
        parse_dockerfile(b"#" * (MAX_DOCKERFILE_BYTES + 1), name="D")
    with pytest.raises(DockerfileError, match=rf"^D:{MAX_INSTRUCTIONS + 1}: more than {MAX_INSTRUCTIONS}"):
        parse_dockerfile(b"LABEL a=b\n" * (MAX_INSTRUCTIONS + 1), name="D")


def test_bom_crlf_indentation_and_keyword_case() -> None:
    text = b'\xef\xbb\xbf  from alpine\r\n\tcopy --chown=1:1 a /b\r\n  # indented comment\r\nCmd ["x"]\r\n'
    assert [(i.keyword, i.lineno) for i in parse_dockerfile(text, name="D").instructions] == [
        ("FROM", 1),
        ("COPY", 2),
        ("CMD", 4),
    ]


def test_flags_are_split_off_with_quotes_removed() -> None:
    inst = parse_dockerfile(b'COPY --chown="a b" --chmod=755 --link src dst\n', name="D").instructions[0]
    assert inst.flags == ("--chown=a b", "--chmod=755", "--link")
    assert inst.args == "src dst"
    assert inst.text == '--chown="a b" --chmod=755 --link src dst'
    assert parse_flags(inst, frozenset({"chown", "chmod", "link"})) == {
        "chown": "a b",
        "chmod": "755",
        "link": None,
    }
    with pytest.raises(StepError, match=r"^unknown flag: --chmod$"):
        parse_flags(inst, frozenset({"chown", "link"}))
    # A lone "--" ends the flags.
    assert (
        parse_dockerfile(b"RUN --mount=x -- --not-a-flag\n", name="D").instructions[0].args == "--not-a-flag"
    )


def test_exec_form_and_shell_form() -> None:
    assert exec_form('["a", "b c"]') == ["a", "b c"]
    assert exec_form('  ["x"]') == ["x"]
    assert exec_form("[]") == []
    assert exec_form("echo [x]") is None
    assert exec_form('["unterminated"') is None  # not JSON: shell form, as Docker does
    assert exec_form("[" * 100_000) is None  # deep nesting is not JSON we take
    with pytest.raises(StepError, match="arrays must be comprised of strings only"):
        exec_form('["a", 1]')


def test_split_words_keeps_quotes_for_later() -> None:
    assert split_words("A=\"x y\" B='$z' C=a\\ b", "\\") == ['A="x y"', "B='$z'", "C=a\\ b"]
    assert split_words('""', "\\") == ['""']
    assert split_words("a\\", "\\") == ["a"]


ENV = {"A": "hello", "EMPTY": "", "SP": "x y"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$A", "hello"),
        ("${A}", "hello"),
        ("pre${A}post", "prehellopost"),
        ("$A-$A", "hello-hello"),
        ("${UNSET}", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${UNSET-dflt}", "dflt"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET:-${A}}", "hello"),
        ('${UNSET:-"q w"}', "q w"),
        ('"$A and \\$A"', "hello and $A"),
        ("'$A'", "$A"),
        ("\\$A", "$A"),
        ("a\\ b", "a b"),
        ('"a\\b"', "a\\b"),
        ("$", "$"),
        ("x$/y", "x$/y"),
        ("$1x", "x"),
        ("${SP}", "x y"),
    ],
)
def test_substitution(word: str, expected: str) -> None:
    assert process_word(word, ENV) == expected


def test_substitution_with_backtick_escape() -> None:
    assert process_word("C:\\dir\\$A", ENV, escape="`") == "C:\\dir\\hello"
    assert process_word("`$A", ENV, escape="`") == "$A"


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${A", r"missing '\}'"),
        ("${}", "bad substitution"),
        ("${:-x}", "bad substitution"),
        ('"open', "matching double-quote"),
        ("'open", "matching single-quote"),
        ("${UNSET:?must be set}", "^UNSET: must be set$"),
        ("${EMPTY:?}", "^EMPTY: is not allowed to be empty$"),
        ("${UNSET?}", "^UNSET: is not allowed to be unset$"),
        ("${A#he}", r"unsupported modifier \(#\)"),
        ("${A/h/j}", r"unsupported modifier \(/\)"),
    ],
)
def test_substitution_errors(word: str, message: str) -> None:
    with pytest.raises(StepError, match=message):
        process_word(word, ENV)


def test_substitution_bounds() -> None:
    nested = "${U:-" * (MAX_NESTING + 1) + "x" + "}" * (MAX_NESTING + 1)
    with pytest.raises(StepError, match="nested more than"):
        process_word(nested, {})
    big = {"B": "b" * (MAX_WORD_CHARS // 2 + 1)}
    with pytest.raises(StepError, match="over the 65536-character bound"):
        process_word("$B$B", big)


def test_instruction_is_a_frozen_value() -> None:
    inst = Instruction(keyword="RUN", lineno=1, flags=(), args="x", text="x")
    with pytest.raises(AttributeError):
        inst.args = "y"  # type: ignore[misc]
