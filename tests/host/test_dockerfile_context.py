"""COPY and ADD from the build context: where files land, their normalised modes, .dockerignore, symbolic
links and special files, reproducibility across machines, and the bounds."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from host.nitro_cli import _build_context
from host.nitro_cli._dockerfile import DockerfileError, ImagePlan, plan_image

FILE, EXE, DIR, LINK = stat.S_IFREG | 0o644, stat.S_IFREG | 0o755, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777


def write_tree(root: Path, files: Mapping[str, str | bytes], *, executable: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        if rel in executable:
            path.chmod(0o700)
    return root


def build(root: Path, dockerfile: str, files: Mapping[str, str | bytes] | None = None) -> ImagePlan:
    write_tree(root, {"Dockerfile.enclave": dockerfile, **(files or {})})
    return plan_image(root)


def listing(result: ImagePlan) -> list[tuple[str, int, bytes]]:
    return [(e.path, e.mode, e.data) for e in result.entries]


def test_copy_destinations(tmp_path: Path) -> None:
    files = {"a.txt": "A", "b.txt": "B", "src/m.py": "M", "src/sub/n.py": "N", "src/empty/.keep": ""}
    result = build(
        tmp_path,
        "FROM a\nWORKDIR /app\n"
        "COPY a.txt /etc/renamed\n"  # a file to a path: that name
        "COPY a.txt b.txt /opt/\n"  # into a directory (trailing /)
        "COPY src lib\n"  # a directory's contents, relative to WORKDIR
        "COPY src/m.py .\n"  # "." is the working directory
        "COPY *.txt /glob/\n"
        "COPY a.txt /opt\n",  # /opt is a directory in the image by now: into it
        files,
    )
    assert listing(result) == [
        ("app", DIR, b""),
        ("app/lib", DIR, b""),
        ("app/lib/empty", DIR, b""),
        ("app/lib/empty/.keep", FILE, b""),
        ("app/lib/m.py", FILE, b"M"),
        ("app/lib/sub", DIR, b""),
        ("app/lib/sub/n.py", FILE, b"N"),
        ("app/m.py", FILE, b"M"),
        ("etc", DIR, b""),
        ("etc/renamed", FILE, b"A"),
        ("glob", DIR, b""),
        ("glob/a.txt", FILE, b"A"),
        ("glob/b.txt", FILE, b"B"),
        ("opt", DIR, b""),
        ("opt/a.txt", FILE, b"A"),
        ("opt/b.txt", FILE, b"B"),
    ]


def test_copy_dot_takes_the_context_less_the_ignored(tmp_path: Path) -> None:
    files = {
        ".dockerignore": "# keep the image small\n**/*.pyc\n.git\nbuild\n!build/keep.txt\n",
        "app.py": "x",
        "pkg/__init__.py": "",
        "pkg/mod.pyc": "junk",
        ".git/config": "secret",
        "build/out.o": "o",
        "build/keep.txt": "k",
    }
    result = build(tmp_path, 'FROM a\nCOPY . /app/\nCMD ["x"]\n', files)
    assert [e.path for e in result.entries] == [
        "app",
        "app/.dockerignore",  # the control files are in the context too, unless ignored
        "app/Dockerfile.enclave",
        "app/app.py",
        "app/build",
        "app/build/keep.txt",
        "app/pkg",
        "app/pkg/__init__.py",
    ]


def test_ignored_source_is_not_found_and_per_dockerfile_ignore_file_wins(tmp_path: Path) -> None:
    files = {".dockerignore": "secret.txt\n", "secret.txt": "s", "Dockerfile.enclave.dockerignore": "other\n"}
    # Dockerfile.enclave.dockerignore replaces .dockerignore (buildkit's rule): secret.txt is visible.
    assert build(tmp_path / "a", "FROM a\nCOPY secret.txt /s\n", files).entries[-1].data == b"s"
    with pytest.raises(
        DockerfileError, match=r"^Dockerfile\.enclave:2: COPY: secret\.txt: not found .*dockerignore"
    ):
        build(
            tmp_path / "b",
            "FROM a\nCOPY secret.txt /s\n",
            {".dockerignore": "secret.txt\n", "secret.txt": "s"},
        )


def test_wildcard_skips_an_ignored_directory_with_nothing_reincluded(tmp_path: Path) -> None:
    files = {".dockerignore": "build*\n!build*/keep.txt\n", "build1/keep.txt": "k", "build2/drop.txt": "d"}
    result = build(tmp_path, "FROM a\nCOPY build* /out/\n", files)
    assert [e.path for e in result.entries] == ["out", "out/keep.txt"]


def test_modes_are_normalised_and_chmod_applies_to_files(tmp_path: Path) -> None:
    files = {"run.sh": "#!/bin/sh\n", "data.txt": "d", "d/x": "x"}
    tree = write_tree(tmp_path / "ctx", files, executable=("run.sh",))
    (tree / "data.txt").chmod(0o600)
    (tree / "Dockerfile.enclave").write_text(
        "FROM a\nCOPY run.sh data.txt /\nCOPY --chmod=0750 --chown=1:2 d /d\n"
    )
    result = plan_image(tree)
    assert [(e.path, oct(e.mode)) for e in result.entries] == [
        ("d", oct(DIR)),
        ("d/x", oct(stat.S_IFREG | 0o750)),
        ("data.txt", oct(FILE)),
        ("run.sh", oct(EXE)),
    ]


def test_same_tree_same_bytes_on_any_machine(tmp_path: Path) -> None:
    files = {"app/main.py": "print(1)\n", "app/run": "#!/bin/sh\n", "app/deep/x/y.txt": "y", "z": "z"}
    dockerfile = 'FROM a\nCOPY app /srv/app\nCOPY z /z\nENV K=v\nCMD ["/srv/app/run"]\n'
    first = write_tree(tmp_path / "one", {"Dockerfile.enclave": dockerfile, **files}, executable=("app/run",))
    old = os.umask(0o077)  # another machine: another umask, other times
    try:
        second = tmp_path / "two"
        for rel in reversed(list(files)):  # created in another order
            write_tree(second, {rel: files[rel]})
        write_tree(second, {"Dockerfile.enclave": dockerfile})
        (second / "app/run").chmod(0o500)
    finally:
        os.umask(old)
    os.utime(second / "z", (1_000_000, 1_000_000))
    a, b = plan_image(first), plan_image(second)
    assert a.entries == b.entries
    assert a.inspect()["Id"] == b.inspect()["Id"]
    # One byte or one exec bit moves the Id.
    (second / "z").write_text("Z")
    assert plan_image(second).inspect()["Id"] != a.inspect()["Id"]
    (second / "z").write_text("z")
    (second / "app/main.py").chmod(0o755)
    assert plan_image(second).inspect()["Id"] != a.inspect()["Id"]


def test_symlinks_inside_are_kept_outside_refused(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "ctx", {"pkg/real.txt": "r", "outside.txt": "o"})
    (tree / "pkg/link").symlink_to("real.txt")
    (tree / "pkg/up").symlink_to("../outside.txt")
    (tree / "named").symlink_to("pkg/real.txt")
    (tree / "Dockerfile.enclave").write_text("FROM a\nCOPY pkg /p\nCOPY named /n\n")
    result = plan_image(tree)
    assert listing(result) == [
        ("n", FILE, b"r"),  # a source that is itself a link is followed, inside the context
        ("p", DIR, b""),
        ("p/link", LINK, b"real.txt"),
        ("p/real.txt", FILE, b"r"),
        ("p/up", LINK, b"../outside.txt"),
    ]


@pytest.mark.parametrize(
    ("target", "source", "message"),
    [
        (
            "../../etc/passwd",
            "pkg",
            r"COPY: symbolic link pkg/evil -> \.\./\.\./etc/passwd points outside the build",
        ),
        (
            "/etc/passwd",
            "pkg",
            r"COPY: symbolic link pkg/evil -> /etc/passwd points outside the build context",
        ),
        ("/etc/passwd", "pkg/evil", r"COPY: pkg/evil: symbolic link pkg/evil -> /etc/passwd leads outside"),
        ("../../../x", "pkg/evil", r"COPY: pkg/evil leads outside the build context$"),
        ("evil", "pkg/evil", r"COPY: pkg/evil: more than 40 symbolic links$"),
    ],
    ids=["relative-in-dir", "absolute-in-dir", "absolute-source", "relative-source", "loop"],
)
def test_symlink_escapes_refused(tmp_path: Path, target: str, source: str, message: str) -> None:
    tree = write_tree(tmp_path / "ctx", {"pkg/ok.txt": "k"})
    (tree / "pkg/evil").symlink_to(target)
    (tree / "Dockerfile.enclave").write_text(f"FROM a\nCOPY {source} /p\n")
    with pytest.raises(DockerfileError, match=rf"^Dockerfile\.enclave:2: {message}"):
        plan_image(tree)


def test_context_that_is_a_link_inside_is_never_left(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"secret": "s"})
    tree = write_tree(tmp_path / "ctx", {"ok": "k"})
    (tree / "dir").symlink_to(outside)
    (tree / "Dockerfile.enclave").write_text("FROM a\nCOPY dir/secret /s\n")
    with pytest.raises(DockerfileError, match="leads outside the build context"):
        plan_image(tree)
    # A wildcard does not descend through the link either.
    (tree / "Dockerfile.enclave").write_text("FROM a\nCOPY dir/* /s/\n")
    with pytest.raises(DockerfileError, match="no source files match"):
        plan_image(tree)


def test_fifo_is_refused_without_blocking_unless_ignored(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "ctx", {"a": "a"})
    os.mkfifo(tree / "pipe")
    (tree / "Dockerfile.enclave").write_text("FROM a\nCOPY . /x/\n")
    with pytest.raises(DockerfileError, match=r"^Dockerfile\.enclave:2: COPY: pipe is a FIFO; only files"):
        plan_image(tree)
    (tree / "Dockerfile.enclave").write_text(
        "FROM a\nCOPY pipe /x\n"
    )  # named directly: opened, not waited on
    with pytest.raises(DockerfileError, match=r"COPY: pipe is a FIFO"):
        plan_image(tree)
    (tree / ".dockerignore").write_text("pipe\n")
    (tree / "Dockerfile.enclave").write_text("FROM a\nCOPY . /x/\n")
    assert [e.path for e in plan_image(tree).entries] == [
        "x",
        "x/.dockerignore",
        "x/Dockerfile.enclave",
        "x/a",
    ]


def _tar_bytes() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo("inside.txt")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    return out.getvalue()


@pytest.mark.parametrize(
    ("content", "refused"),
    [
        (_tar_bytes(), True),
        (gzip.compress(_tar_bytes(), mtime=0), True),
        (gzip.compress(b"just text\n" * 100, mtime=0), False),
        (b"plain text\n" * 100, False),
    ],
    ids=["tar", "tar-gz", "gz-of-text", "text"],
)
def test_add_of_an_archive_is_refused_other_files_copied(
    tmp_path: Path, content: bytes, refused: bool
) -> None:
    dockerfile = "FROM a\nADD thing /t\n"
    if refused:
        with pytest.raises(
            DockerfileError, match=r"^Dockerfile\.enclave:2: ADD: thing is a tar archive, which ADD"
        ):
            build(tmp_path, dockerfile, {"thing": content})
    else:
        assert listing(build(tmp_path, dockerfile, {"thing": content})) == [("t", FILE, content)]
    # COPY never unpacks.
    assert build(tmp_path / "copy", "FROM a\nCOPY thing /t\n", {"thing": content}).entries[0].data == content


def test_image_tree_conflicts(tmp_path: Path) -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile\.enclave:3: COPY: /x is a file in the image"):
        build(tmp_path / "a", "FROM a\nCOPY f /x\nCOPY f /x/y\n", {"f": "f"})
    with pytest.raises(
        DockerfileError, match=r"^Dockerfile\.enclave:3: COPY: cannot replace the directory /d/x"
    ):
        build(tmp_path / "b", "FROM a\nWORKDIR /d/x\nCOPY src /d/..//d\n", {"src/x": "file"})
    # An existing directory as the destination of one file takes it inside.
    assert (
        build(tmp_path / "d", "FROM a\nWORKDIR /d\nCOPY f /d/..//d\n", {"f": "f"}).entries[-1].path == "d/f"
    )
    # A later copy replaces a file.
    assert (
        build(tmp_path / "c", "FROM a\nCOPY f /x\nCOPY g /x\n", {"f": "f", "g": "g"}).entries[0].data == b"g"
    )


def test_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"d/{i}": "0123456789" for i in range(5)}
    monkeypatch.setattr(_build_context, "MAX_FILES", 4)
    with pytest.raises(DockerfileError, match=r"^Dockerfile\.enclave:2: COPY: more than 4 files copied"):
        build(tmp_path / "a", "FROM a\nCOPY d /d\n", files)
    monkeypatch.setattr(_build_context, "MAX_FILES", 100)
    monkeypatch.setattr(_build_context, "MAX_TOTAL_BYTES", 45)
    with pytest.raises(DockerfileError, match=r"^Dockerfile\.enclave:2: COPY: more than 45 bytes copied"):
        build(tmp_path / "b", "FROM a\nCOPY d /d\n", files)
    monkeypatch.setattr(_build_context, "MAX_DIR_DEPTH", 3)
    with pytest.raises(DockerfileError, match=r"COPY: deep/a/b/c: directories nested over 3 deep$"):
        build(tmp_path / "c", "FROM a\nCOPY deep /d\n", {"deep/a/b/c/d/e": "x"})


def test_context_is_left_untouched(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "ctx", {"a": "a", "d/b": "b"})
    (tree / "Dockerfile.enclave").write_text("FROM a\nCOPY . /\n")
    before = sorted((p.relative_to(tree), p.stat().st_mtime_ns) for p in tree.rglob("*"))
    plan_image(tree)
    assert sorted((p.relative_to(tree), p.stat().st_mtime_ns) for p in tree.rglob("*")) == before
    shutil.rmtree(tree)
