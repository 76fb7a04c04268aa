"""Hostile input: any Dockerfile, any ignore file, any word either works or raises our one documented error
(one line), never another exception; and the RUN notices and refusals never hold a raw newline."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.nitro_cli._dockerfile import DockerfileError, plan_image
from host.nitro_cli._dockerfile_parse import KEYWORDS, StepError, parse_dockerfile
from host.nitro_cli._dockerfile_shell import process_word
from host.nitro_cli._dockerignore import parse_dockerignore

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Words that mean something to the parser, the lexer or the builder, mixed with arbitrary text.
_TOKENS = st.sampled_from(
    [
        " ", "\t", "\\", "`", "\n", "\\\n", "#", "$", "${", "}", ":-", ":+", ":?", "'", '"', "=", "[", "]",
        '["a", "b"]', "--chmod=755", "--from=x", "--link", "--", "<<EOF", "*", "?", "/", "..", ".", "f",
        "d", "d/", "link", "out", "/app", "A", "B=1", "\x00", "\u2028", "\ud800", "\\u0000", "é", "AS", "x",
    ]
)  # fmt: skip
_LINE = st.tuples(
    st.sampled_from([*sorted(KEYWORDS), "from", "copy", "BOGUS", "# escape=`", "# syntax=x", "#", ""]),
    st.lists(st.one_of(_TOKENS, st.text(max_size=6)), max_size=8),
).map(lambda parts: parts[0] + " " + "".join(parts[1]))


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzzctx")
    (root / "f").write_text("f")
    (root / "d").mkdir()
    (root / "d" / "x").write_text("x")
    (root / "link").symlink_to("f")
    (root / "out").symlink_to("/etc")
    return root


def _one_line(exc: BaseException) -> None:
    assert "\n" not in str(exc)
    assert "\r" not in str(exc)


@FUZZ
@given(st.binary(max_size=400))
def test_parse_any_bytes(data: bytes) -> None:
    try:
        parse_dockerfile(data, name="Dockerfile")
    except DockerfileError as exc:
        _one_line(exc)


@FUZZ
@given(st.lists(_LINE, min_size=1, max_size=8))
def test_plan_any_dockerfile(context: Path, lines: list[str]) -> None:
    dockerfile = context / "Dockerfile.enclave"
    text = "FROM scratch\n" + "\n".join(lines) + "\n"
    dockerfile.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        result = plan_image(context, docker_uri="fuzz")
    except DockerfileError as exc:
        _one_line(exc)
        return
    result.inspect()
    result.env_file()
    for _, text in result.not_executed:
        assert "\n" not in text
    try:
        result.cmd_file()
    except DockerfileError as exc:
        _one_line(exc)


@FUZZ
@given(st.binary(max_size=300))
def test_dockerignore_any_bytes(data: bytes) -> None:
    try:
        rules = parse_dockerignore(data)
    except DockerfileError as exc:
        _one_line(exc)
        return
    for path in ("a", "a/b", ".git/config", "x.pyc"):
        assert rules.ignored(path) in (True, False)


@FUZZ
@given(st.lists(_TOKENS, max_size=20).map("".join), st.sampled_from(["\\", "`"]))
def test_process_word_any_text(word: str, escape: str) -> None:
    try:
        result = process_word(word, {"A": "a", "E": ""}, escape=escape)
    except StepError:
        return
    assert isinstance(result, str)
