"""The wheel is what users install: it builds without a warning and carries the packages, the pytest plugin,
the console scripts, ``py.typed`` and nitro-cli's simulated blobs, under an SPDX license expression.

Metadata rules: PEP 639 (``License-Expression``, no ``License`` field next to it), the entry-points file
format (``[console_scripts]``, ``[pytest11]``) of the PyPA "Entry points specification", PEP 561 for
``py.typed``.
"""

from __future__ import annotations

import configparser
import email.parser
import re
import tomllib
import zipfile
from pathlib import Path

import pytest
from wheel_user import REPO, RUN_TIMEOUT_S, BuiltWheel, checked, run, user_env

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]
TOP_LEVEL = sorted({name.split(".")[0] for name in PACKAGES})
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
BLOBS = sorted((REPO / "host" / "nitro_cli" / "blobs").rglob("*"))
#: A line of a build log that reports a Python warning (``SetuptoolsDeprecationWarning: ...``) or a
#: distutils/setuptools log warning (``warning: ...``).
WARNING_LINE = re.compile(r"\w*Warning\b|^\s*warning:", re.MULTILINE)


def _names(wheel: BuiltWheel) -> set[str]:
    with zipfile.ZipFile(wheel.path) as archive:
        return set(archive.namelist())


def _dist_info(wheel: BuiltWheel, name: str) -> str:
    with zipfile.ZipFile(wheel.path) as archive:
        [path] = [n for n in archive.namelist() if n.endswith(f".dist-info/{name}")]
        return archive.read(path).decode()


def test_the_build_prints_no_warning(built_wheel: BuiltWheel) -> None:
    found = [line.strip() for line in built_wheel.log.splitlines() if WARNING_LINE.search(line)]
    assert found == []


def test_the_license_is_an_spdx_expression(built_wheel: BuiltWheel) -> None:
    metadata = email.parser.Parser().parsestr(_dist_info(built_wheel, "METADATA"))
    assert metadata["Metadata-Version"] >= "2.4"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License"] is None


def test_every_module_of_every_package_is_in_it_and_nothing_else_of_the_tree(built_wheel: BuiltWheel) -> None:
    names = _names(built_wheel)
    for package in PACKAGES:
        folder = built_wheel.source / package.replace(".", "/")
        for module in folder.glob("*.py"):
            assert module.relative_to(built_wheel.source).as_posix() in names
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == set(TOP_LEVEL)


@pytest.mark.parametrize("package", TOP_LEVEL)
def test_no_subpackage_is_left_out_of_the_package_list(package: str) -> None:
    found = {
        init.parent.relative_to(REPO).as_posix().replace("/", ".")
        for init in (REPO / package).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= set(PACKAGES)


@pytest.mark.parametrize("package", TOP_LEVEL)
def test_each_package_is_typed(built_wheel: BuiltWheel, package: str) -> None:
    assert f"{package}/py.typed" in _names(built_wheel)


def test_it_carries_the_simulated_blobs_byte_for_byte(built_wheel: BuiltWheel) -> None:
    files = [blob for blob in BLOBS if blob.is_file()]
    assert files
    with zipfile.ZipFile(built_wheel.path) as archive:
        for blob in files:
            assert archive.read(blob.relative_to(REPO).as_posix()) == blob.read_bytes()


def test_entry_points_name_the_plugin_and_every_console_script(built_wheel: BuiltWheel) -> None:
    entry_points = configparser.ConfigParser(interpolation=None)
    entry_points.optionxform = str  # type: ignore[assignment,method-assign]  # names are case-sensitive
    entry_points.read_string(_dist_info(built_wheel, "entry_points.txt"))
    assert dict(entry_points["pytest11"]) == {"nitro_sim": "nitro_sim.pytest_plugin"}
    assert dict(entry_points["console_scripts"]) == SCRIPTS
    assert "nitro_sim/pytest_plugin.py" in _names(built_wheel)


def test_installed_it_imports_from_the_venv_and_pytest_loads_the_plugin(
    user_venv: Path, tmp_path: Path
) -> None:
    python = str(user_venv / "bin" / "python")
    code = (
        "import attestation, enclave, host.nitro_cli._blobs as b, kms, nitro_sim.pytest_plugin as p;"
        "print(attestation.__file__); print(p.__file__); print(b.load_blobs({}).directory / 'init')"
    )
    done = checked(run([python, "-c", code], timeout=RUN_TIMEOUT_S, env=user_env(user_venv), cwd=tmp_path))
    site = (user_venv / "lib").resolve()
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert Path(line).resolve().is_relative_to(site), line
    helped = checked(
        run(
            [str(user_venv / "bin" / "pytest"), "--help"],
            timeout=RUN_TIMEOUT_S,
            env=user_env(user_venv),
            cwd=tmp_path,
        )
    )
    assert "--nitro-sim-scope" in helped.stdout


#: ``--help`` exits 0 except where the real tool's does not: kmstool-enclave-cli has no help path but its
#: command list, ``print_commands(1)`` (aws-nitro-enclaves-sdk-c ``bin/kmstool-enclave-cli/main.c``).
HELP_EXIT_STATUS = {"kmstool-enclave-cli": 1}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_console_script_runs(user_venv: Path, tmp_path: Path, script: str) -> None:
    done = run(
        [str(user_venv / "bin" / script), "--help"],
        timeout=RUN_TIMEOUT_S,
        env=user_env(user_venv),
        cwd=tmp_path,
    )
    assert done.returncode == HELP_EXIT_STATUS.get(script, 0), done.stderr
    assert "usage" in (done.stdout + done.stderr).lower()
    assert "Traceback" not in done.stderr
