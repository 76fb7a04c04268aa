"""``plan_image``: a Dockerfile carried out without a Docker engine. The image config (ENV, ARG, CMD,
ENTRYPOINT...), what nitro-cli writes to ``cmd``/``env``, the ``docker inspect`` description, and every
refusal as one line naming the file and the line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from host.nitro_cli._dockerfile import CREATED, DockerfileError, ImagePlan, plan_image
from host.nitro_cli._dockerfile_steps import DEFAULT_PATH

REPO = Path(__file__).resolve().parents[2]
PATH_ENV = f"PATH={DEFAULT_PATH}"


def make_context(root: Path, dockerfile: str, files: Mapping[str, str | bytes] | None = None) -> Path:
    """A build context under ``root`` with ``Dockerfile.enclave`` and ``files`` (path -> content)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile.enclave").write_text(dockerfile)
    for rel, content in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def plan(
    tmp_path: Path, dockerfile: str, files: Mapping[str, str | bytes] | None = None, **kw: object
) -> ImagePlan:
    return plan_image(make_context(tmp_path / "ctx", dockerfile, files), **kw)  # type: ignore[arg-type]


def test_repo_dockerfile_enclave() -> None:
    result = plan_image(REPO, docker_uri="attested-random")
    assert result.dockerfile == "Dockerfile.enclave"
    assert result.base
    assert result.not_executed, "the repo's Dockerfile.enclave installs packages with RUN"
    assert all(kind == int(kind) for kind, _ in result.not_executed)
    assert result.argv()
    assert result.cmd_file().endswith(b"\n")
    paths = [entry.path for entry in result.entries]
    assert any(p.endswith("enclave/__init__.py") for p in paths)
    # The repo's .dockerignore keeps the checkout's caches and tooling out of the image.
    for unwanted in (".git", ".venv", "__pycache__", ".mypy_cache"):
        assert not any(unwanted in p.split("/") for p in paths), unwanted
    assert paths == sorted(paths, key=lambda p: p.encode())


def test_env_forms_quoting_and_replacement_in_place(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        "FROM scratch\n"
        "ENV A 1 2  3\n"  # old form: the rest of the line is the value
        "ENV B=\"x y\" C='$A' D=$A\n"
        "ENV A=new E=$A\n"  # E sees A as it was before this line
        'ENV PATH="/opt/bin:$PATH"\n',
    )
    assert result.env == (
        f"PATH=/opt/bin:{DEFAULT_PATH}",
        "A=new",
        "B=x y",
        "C=$A",
        "D=1 2  3",
        "E=1 2  3",
    )
    assert result.env_file() == b"".join(item.encode() + b"\n" for item in result.env)


def test_arg_defaults_build_args_and_env_precedence(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        "ARG BASE=alpine\nARG TAG\nFROM ${BASE}:${TAG:-3.19} AS Builder\n"
        "ARG BASE\nARG V=1 W=${V}x\nARG TARGETARCH\nENV W=envwins\n"
        "LABEL base=$BASE v=$V w=$W arch=$TARGETARCH notdeclared=${TAG}\n",
        build_args={"TAG": "edge", "V": "7"},
    )
    assert result.base == "alpine:edge"
    assert result.stage == "builder"
    # ARGs are variables for substitution only; they never reach the image's Env.
    assert result.env == (PATH_ENV, "W=envwins")
    assert result.labels == {"base": "alpine", "v": "7", "w": "envwins", "arch": "amd64", "notdeclared": ""}


def test_cmd_entrypoint_shell_and_nitro_cli_argv(tmp_path: Path) -> None:
    shell_form = plan(tmp_path / "a", "FROM a\nCMD python3 -m app $X\n")
    assert shell_form.cmd == ("/bin/sh", "-c", "python3 -m app $X")  # no substitution in CMD
    assert shell_form.cmd_file() == b"/bin/sh\n-c\npython3 -m app $X\n"

    with_shell = plan(tmp_path / "b", 'FROM a\nSHELL ["/bin/bash", "-eu", "-c"]\nENTRYPOINT exec app\n')
    assert with_shell.entrypoint == ("/bin/bash", "-eu", "-c", "exec app")
    assert with_shell.cmd is None
    assert with_shell.argv() == with_shell.entrypoint
    assert with_shell.shell == ("/bin/bash", "-eu", "-c")

    # nitro-cli runs the CMD when there is one, never ENTRYPOINT + CMD; a later ENTRYPOINT only clears a
    # CMD inherited from the base image, not one set in this Dockerfile.
    both = plan(tmp_path / "c", 'FROM a\nCMD ["serve"]\nENTRYPOINT ["python3", "app.py"]\n')
    assert both.cmd == ("serve",)
    assert both.entrypoint == ("python3", "app.py")
    assert both.argv() == ("serve",)

    neither = plan(tmp_path / "d", "FROM a\n")
    with pytest.raises(
        DockerfileError, match=r"^Dockerfile\.enclave: no CMD or ENTRYPOINT .*UnsupportedEntryPoint"
    ):
        neither.cmd_file()


def test_run_lines_are_collected_not_executed(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        "FROM a\nRUN apt-get update && \\\n    apt-get install -y x\n"
        "RUN --mount=type=cache,target=/c pip install .\n"
        'RUN ["/bin/true"]\nCMD ["x"]\n',
    )
    assert result.not_executed == (
        (2, "apt-get update &&     apt-get install -y x"),
        (4, "--mount=type=cache,target=/c pip install ."),
        (5, '["/bin/true"]'),
    )


def test_config_records(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        "FROM a\nARG P=8000\nLABEL org.x=1 \"two words\"='v v'\nLABEL legacy value here\nUSER app:app\n"
        'EXPOSE $P 53/udp 9000-9002/TCP\nVOLUME /data ["/x"]\nVOLUME ["/y"]\nSTOPSIGNAL SIGINT\n'
        "HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://127.0.0.1/\nMAINTAINER someone\n"
        'CMD ["x"]\n',
    )
    assert result.labels == {"org.x": "1", "two words": "v v", "legacy": "value here"}
    assert result.user == "app:app"
    assert result.exposed_ports == ("53/udp", "8000/tcp", "9000/tcp", "9001/tcp", "9002/tcp")
    # Only the whole argument can be JSON; a later word is a path, its quotes removed as in any word.
    assert result.volumes == ("/data", "/y", "[/x]")
    assert result.stop_signal == "SIGINT"
    assert result.healthcheck == {
        "Test": ["CMD-SHELL", "curl -f http://127.0.0.1/"],
        "Interval": 90_000_000_000,
        "Retries": 3,
    }
    config = result.inspect()["Config"]
    assert config["ExposedPorts"]["8000/tcp"] == {}
    assert config["Volumes"] == {"/data": {}, "[/x]": {}, "/y": {}}
    assert config["StopSignal"] == "SIGINT"
    assert result.inspect()["Author"] == "someone"
    assert plan(tmp_path / "n", "FROM a\nHEALTHCHECK NONE\n").healthcheck == {"Test": ["NONE"]}


def test_workdir_is_relative_to_the_previous_and_created(tmp_path: Path) -> None:
    result = plan(tmp_path, "FROM a\nWORKDIR /srv\nWORKDIR app/../app2\nENV D=sub\nWORKDIR $D\n")
    assert result.workdir == "/srv/app2/sub"
    assert [(e.path, oct(e.mode)) for e in result.entries] == [
        ("srv", "0o40755"),
        ("srv/app2", "0o40755"),
        ("srv/app2/sub", "0o40755"),
    ]
    assert plan(tmp_path / "none", "FROM a\n").workdir == ""


def test_inspect_is_docker_shaped_and_has_nothing_of_the_host(tmp_path: Path) -> None:
    result = plan(tmp_path, 'FROM a\nCOPY f /f\nCMD ["/f"]\n', {"f": "x"}, docker_uri="repo/app")
    described = result.inspect()
    assert set(described) == {"Id", "RepoTags", "Created", "Architecture", "Os", "Author", "Config"}
    assert described["RepoTags"] == ["repo/app:latest"]
    assert result.inspect("registry:5000/app")["RepoTags"] == ["registry:5000/app"]  # nitro-cli: has a ":"
    assert described["Created"] == CREATED
    assert (described["Architecture"], described["Os"]) == ("amd64", "linux")
    assert described["Id"].startswith("sha256:")
    assert len(described["Id"]) == 7 + 64
    assert set(described["Config"]) == {
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "Labels",
        "ExposedPorts",
    }
    text = json.dumps(described)
    assert str(tmp_path) not in text
    # Tags do not change the image's identity.
    assert result.inspect("other")["Id"] == described["Id"]


def test_dockerfile_name_choice(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text('FROM plain\nCMD ["p"]\n')
    assert plan_image(ctx).dockerfile == "Dockerfile"
    (ctx / "Dockerfile.enclave").write_text('FROM enclave\nCMD ["e"]\n')
    assert plan_image(ctx).base == "enclave"
    assert plan_image(ctx, "Dockerfile").base == "plain"
    with pytest.raises(DockerfileError, match=r"^Other: not found in "):
        plan_image(ctx, "Other")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DockerfileError, match=r"^no Dockerfile\.enclave or Dockerfile in "):
        plan_image(empty)
    with pytest.raises(DockerfileError, match=r"^cannot open the build context .*: No such file"):
        plan_image(tmp_path / "missing")


REFUSALS = [
    pytest.param(
        "FROM a\n\nONBUILD RUN x\n", 3, r"ONBUILD is not supported without a Docker engine$", id="onbuild"
    ),
    pytest.param('FROM a AS one\nCMD ["x"]\nFROM b\n', 3, r"a second FROM \(a multi-stage", id="second-from"),
    pytest.param("ARG X=1\nENV A=b\nFROM a\n", 2, r"ENV before the first FROM", id="before-from"),
    pytest.param("ARG X=1\n", 0, r"no FROM instruction$", id="no-from"),
    pytest.param("FROM a b\n", 1, r"FROM: FROM requires either one or three arguments$", id="from-args"),
    pytest.param(
        "FROM $NOTHING\n", 1, r"FROM: base name \(\$NOTHING\) should not be blank$", id="from-blank"
    ),
    pytest.param("FROM --platform=linux/arm64 a\n", 1, r"FROM: --platform=linux/arm64: only", id="platform"),
    pytest.param("FROM a\nCOPY --from=build /x /y\n", 2, r"COPY: --from \(another stage", id="copy-from"),
    pytest.param("FROM a\nCOPY --parents f /y/\n", 2, r"COPY: --parents is not supported", id="copy-parents"),
    pytest.param(
        "FROM a\nCOPY nothere /x\n", 2, r"COPY: nothere: not found in the build context$", id="copy-missing"
    ),
    pytest.param(
        "FROM a\nCOPY ../etc/passwd /x\n", 2, r"COPY: \.\./etc/passwd is outside the build", id="copy-outside"
    ),
    pytest.param("FROM a\nCOPY f\n", 2, r"COPY: requires at least two arguments", id="copy-one-arg"),
    pytest.param(
        "FROM a\nCOPY https://example.com/x /x\n", 2, r"COPY: https://example\.com/x: a URL", id="copy-url"
    ),
    pytest.param(
        "FROM a\nADD https://example.com/x.tgz /x\n",
        2,
        r"ADD: https://example\.com/x\.tgz: a URL",
        id="add-url",
    ),
    pytest.param(
        "FROM a\nADD git@github.com:o/r.git /x\n", 2, r"ADD: git@github\.com:o/r\.git: a URL", id="add-git"
    ),
    pytest.param(
        "FROM a\nADD --checksum=sha256:00 f /x\n", 2, r"ADD: --checksum is not supported", id="add-checksum"
    ),
    pytest.param(
        "FROM a\nCOPY f g /dest\n", 2, r"COPY: When using COPY with more than one source", id="many-to-file"
    ),
    pytest.param(
        "FROM a\nCOPY *.txt /dest\n", 2, r"COPY: When using COPY with more than one source", id="glob-to-file"
    ),
    pytest.param("FROM a\nCOPY *.nope /dest/\n", 2, r"COPY: \*\.nope: no source files match", id="glob-none"),
    pytest.param(
        "FROM a\nCOPY --chmod=u+x f /f\n", 2, r"COPY: --chmod=u\+x: only octal", id="chmod-symbolic"
    ),
    pytest.param("FROM a\nCOPY --bogus=1 f /f\n", 2, r"COPY: unknown flag: --bogus$", id="unknown-flag"),
    pytest.param("FROM a\nENV --x=1 A=b\n", 2, r"ENV: unknown flag: --x$", id="flag-on-env"),
    pytest.param("FROM a\nENV =x\n", 2, r"ENV: ENV names can not be blank$", id="env-blank"),
    pytest.param("FROM a\nENV A=1 B\n", 2, r"ENV: Syntax error - can't find = in 'B'", id="env-no-equals"),
    pytest.param("FROM a\nENV A\n", 2, r"ENV: must have two arguments$", id="env-one-word"),
    pytest.param('FROM a\nENV A="${UNSET:?set it}"\n', 2, r"ENV: UNSET: set it$", id="env-required"),
    pytest.param('FROM a\nENV A="open\n', 2, r"ENV: unexpected end of statement", id="env-quote"),
    pytest.param("FROM a\nWORKDIR\n", 2, r"WORKDIR requires at least one argument$", id="no-args"),
    pytest.param('FROM a\nCMD ["a\\nb"]\n', 2, r"CMD: the CMD holds a newline", id="cmd-newline"),
    pytest.param(
        'FROM a\nENV A="x\\\ny"\n', None, None, id="env-newline-json"
    ),  # a continuation joins lines: no newline
    pytest.param('FROM a\nCMD ["a\\u0000"]\n', 2, r"CMD: the CMD holds a NUL", id="cmd-nul"),
    pytest.param('FROM a\nCMD ["\\udc80"]\n', 2, r"CMD: the CMD holds a NUL or a lone", id="cmd-surrogate"),
    pytest.param('FROM a\nCMD ["a", 1]\n', 2, r"CMD: when using JSON array syntax", id="cmd-not-strings"),
    pytest.param(
        "FROM a\nSHELL /bin/bash -c\n", 2, r"SHELL: SHELL requires the arguments", id="shell-not-json"
    ),
    pytest.param("FROM a\nEXPOSE 80/icmp\n", 2, r"EXPOSE: invalid port '80/icmp'", id="expose-bad"),
    pytest.param("FROM a\nEXPOSE 90-80\n", 2, r"EXPOSE: invalid port range '90-80'$", id="expose-range"),
    pytest.param("FROM a\nSTOPSIGNAL SIGNOPE\n", 2, r"STOPSIGNAL: invalid signal: SIGNOPE$", id="stopsignal"),
    pytest.param("FROM a\nHEALTHCHECK RUN x\n", 2, r"HEALTHCHECK: expects NONE or CMD", id="health-type"),
    pytest.param(
        "FROM a\nHEALTHCHECK --interval=soon CMD x\n",
        2,
        r"HEALTHCHECK: --interval=soon",
        id="health-duration",
    ),
    pytest.param("FROM a AS 1st\n", 1, r"FROM: invalid name for build stage: '1st'$", id="stage-name"),
]


@pytest.mark.parametrize(("dockerfile", "line", "message"), REFUSALS)
def test_refusals_are_one_line_with_the_line_number(
    tmp_path: Path, dockerfile: str, line: int | None, message: str | None
) -> None:
    files = {"f": "f", "g": "g", "a.txt": "a", "b.txt": "b"}
    if message is None:
        assert plan(tmp_path, dockerfile, files).env[-1] == "A=xy"
        return
    where = rf"^Dockerfile\.enclave:{line}: " if line else r"^Dockerfile\.enclave: "
    with pytest.raises(DockerfileError, match=where + message) as caught:
        plan(tmp_path, dockerfile, files)
    assert "\n" not in str(caught.value)
