"""``.dockerignore`` as moby/patternmatcher reads and matches it (MatchesOrParentMatches)."""

from __future__ import annotations

import pytest

from host.nitro_cli._dockerfile_parse import DockerfileError
from host.nitro_cli._dockerignore import (
    MAX_IGNORE_BYTES,
    MAX_IGNORE_PATTERNS,
    MAX_PATTERN_CHARS,
    go_clean,
    parse_dockerignore,
    segment_matcher,
)


def _ignored(rules_text: str, path: str) -> bool:
    return parse_dockerignore(rules_text.encode()).ignored(path)


@pytest.mark.parametrize(
    ("rules", "path", "ignored"),
    [
        # "*" stays in one directory level; "**" crosses any number, none included.
        ("*.pyc", "a.pyc", True),
        ("*.pyc", "pkg/a.pyc", False),
        ("**/*.pyc", "pkg/sub/a.pyc", True),
        ("**/*.pyc", "a.pyc", True),
        ("**/__pycache__", "x/__pycache__/m.pyc", True),
        ("pkg/**/*.txt", "pkg/a.txt", True),
        ("pkg/**/*.txt", "pkg/a/b/c.txt", True),
        ("pkg/**/*.txt", "other/a.txt", False),
        # A directory pattern takes everything under it (parent matching).
        (".venv", ".venv/bin/python", True),
        (".venv", "sub/.venv/x", False),
        ("docs/**", "docs/a/b", True),
        ("docs/**", "docs", False),
        ("**", "anything/at/all", True),
        # Leading "/" and "./" are dropped, paths are cleaned.
        ("/secret", "secret", True),
        ("./a/../secret", "secret", True),
        ("dir/", "dir/f", True),
        # "?" is one character but "/", classes and escapes as filepath.Match.
        ("?.txt", "a.txt", True),
        ("?.txt", "ab.txt", False),
        ("file[0-9]", "file7", True),
        ("file[^0-9]", "file7", False),
        ("file[^0-9]", "filex", True),
        ("lit\\*", "lit*", True),
        ("lit\\*", "litx", False),
        # moby's suffix match: "**" then literal text matches any path ending in the text.
        ("**foo", "barfoo", True),
        ("**/foo", "barfoo", False),
        ("**/foo", "a/foo", True),
        # Regex metacharacters are literal.
        ("a+b(c).txt", "a+b(c).txt", True),
        ("a.txt", "abtxt", False),
    ],
)
def test_matching(rules: str, path: str, ignored: bool) -> None:
    assert _ignored(rules, path) is ignored


def test_exceptions_last_match_wins() -> None:
    rules = parse_dockerignore(b"*\n!README.md\n!src\nsrc/*.tmp\n!src/keep.tmp\n")
    assert rules.has_exceptions
    assert rules.ignored("Dockerfile")
    assert not rules.ignored("README.md")
    assert not rules.ignored("src/main.py")
    assert rules.ignored("src/x.tmp")
    assert not rules.ignored("src/keep.tmp")


def test_exception_reincludes_below_an_ignored_directory() -> None:
    rules = parse_dockerignore(b"build\n!build/keep/**\n")
    assert rules.ignored("build/x")
    assert rules.ignored("build")
    assert not rules.ignored("build/keep/a.txt")


def test_comments_blank_lines_bom_and_spaces() -> None:
    rules = parse_dockerignore(b"\xef\xbb\xbf# comment\n\n   a.txt   \n\t\n!  b.txt\n")
    assert [(p.text, p.exception) for p in rules.patterns] == [("a.txt", False), ("b.txt", True)]
    # Only a "#" in the first column starts a comment (moby checks before trimming).
    assert [p.text for p in parse_dockerignore(b" # not a comment\n").patterns] == ["# not a comment"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a\n!\n", r'^\.dockerignore:2: illegal exclusion pattern: "!"$'),
        (b"ok\n[unclosed\n", r"^\.dockerignore:2: syntax error in pattern '\[unclosed'$"),
        (b"\xff\n", r"^\.dockerignore:1: not UTF-8 text$"),
        (
            b"x" * (MAX_PATTERN_CHARS + 1),
            rf"^\.dockerignore:1: pattern over the {MAX_PATTERN_CHARS}-character",
        ),
        (b"a\n" * (MAX_IGNORE_PATTERNS + 1), rf"^\.dockerignore:{MAX_IGNORE_PATTERNS + 1}: more than"),
        (b"#" * (MAX_IGNORE_BYTES + 1), r"^\.dockerignore: \d+ bytes, over the"),
    ],
    ids=["lone-bang", "bad-class", "not-utf8", "long-pattern", "many-patterns", "big-file"],
)
def test_refusals(data: bytes, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        parse_dockerignore(data)


def test_go_clean() -> None:
    assert go_clean("") == "."
    assert go_clean("a//b/./c/..") == "a/b"
    assert go_clean("//a") == "/a"
    assert go_clean("/../a") == "/a"
    assert go_clean("../a") == "../a"


def test_segment_matcher_is_filepath_match() -> None:
    assert segment_matcher("*.py").fullmatch(".hidden.py")  # Go's "*" matches a leading dot
    assert not segment_matcher("*.py").fullmatch("a/b.py")
    assert segment_matcher("f?le[0-9]").fullmatch("file1")
