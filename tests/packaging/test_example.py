"""The example user project (``examples/dice``) tested as its own CI would: the built wheel installed in a
fresh virtual environment, the project copied outside this repository, its own pytest run from there.

The inner run's summary is asserted (every test passed, none skipped or failed) and repeated at the end of
this run's output (conftest's terminal summary), so the example's tests count where this suite's do. What
the inner tests import is checked to come from the virtual environment: nothing of this source tree is on
their path.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from wheel_user import REPO, RUN_TIMEOUT_S, USER_SUITE_SUMMARIES, checked, run, user_env

EXAMPLE = REPO / "examples" / "dice"
#: pytest's closing line, e.g. ``== 18 passed in 2.31s ==``.
SUMMARY = re.compile(r"^=+ (?P<counts>.*?) in [\d.]+s(?: \([\d:]+\))? =+$", re.MULTILINE)


def _copy(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.eif"))
    return dest


def test_the_example_imports_our_packages_from_the_venv_only(user_venv: Path, tmp_path: Path) -> None:
    project = _copy(tmp_path / "dice")
    code = (
        "import sys, attestation, enclave, nitro_sim.pytest_plugin, dice;"
        "print(attestation.__file__); print(enclave.__file__); print(nitro_sim.pytest_plugin.__file__);"
        "print(dice.__file__); print(*sys.path, sep='\\n')"
    )
    done = checked(
        run(
            [str(user_venv / "bin" / "python"), "-c", code],
            timeout=RUN_TIMEOUT_S,
            env=user_env(user_venv),
            cwd=project,
        )
    )
    ours, dice_file, paths = (
        done.stdout.splitlines()[:3],
        done.stdout.splitlines()[3],
        done.stdout.splitlines()[4:],
    )
    for module_file in ours:
        assert Path(module_file).resolve().is_relative_to(user_venv.resolve()), module_file
    assert Path(dice_file).resolve() == (project / "dice.py").resolve()
    assert not any(p and Path(p).resolve().is_relative_to(REPO) for p in paths), paths


def test_the_example_suite_passes_in_a_fresh_venv_with_the_wheel(user_venv: Path, tmp_path: Path) -> None:
    project = _copy(tmp_path / "dice")
    done = run(
        [str(user_venv / "bin" / "pytest"), "-p", "no:cacheprovider", "-v"],
        timeout=RUN_TIMEOUT_S,
        env=user_env(user_venv),
        cwd=project,
    )
    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    [summary] = SUMMARY.findall(done.stdout)
    counts = {word: int(number) for number, word in (part.split(" ", 1) for part in summary.split(", "))}
    assert set(counts) == {"passed"}, summary
    assert counts["passed"] == len(re.findall(r" PASSED", done.stdout))
    assert counts["passed"] >= 19
    USER_SUITE_SUMMARIES.append(("examples/dice", summary))
    assert "Traceback" not in done.stderr
