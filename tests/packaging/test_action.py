"""The composite action (``action.yml``) run as a GitHub runner runs it, in a fresh virtual environment with
the built wheel as its ``package`` input; its PCR outputs are ``nitro-cli describe-eif``'s.

What the runner does, and so :func:`run_action` (GitHub's "Metadata syntax for GitHub Actions", "Workflow
syntax" ``shell``, "Workflow commands": environment files):

- inputs are the ``with:`` values, else the declared ``default``; a ``required`` one missing, or one not
  declared, is an error;
- each ``run:`` step of ``shell: bash`` is written to a file and run as ``bash --noprofile --norc -eo
  pipefail FILE`` with ``${{ }}`` expressions already replaced, its ``env:`` evaluated the same way, and the
  files ``GITHUB_OUTPUT``, ``GITHUB_ENV``, ``GITHUB_PATH`` (fresh for the step) plus ``GITHUB_ACTION_PATH``,
  ``GITHUB_WORKSPACE`` and ``RUNNER_TEMP`` in its environment; a non-zero exit fails the action;
- lines ``name=value`` or ``name<<DELIM`` ... ``DELIM`` in ``GITHUB_OUTPUT`` become the step's outputs
  (``steps.<id>.outputs.<name>``); ``GITHUB_ENV`` adds variables and ``GITHUB_PATH`` directories for the
  steps after it;
- the action's outputs are its ``outputs.<name>.value`` expressions, evaluated at the end.

Only the expressions ``inputs.X``, ``steps.ID.outputs.X``, ``github.action_path``, ``github.workspace``
and ``runner.temp`` are known here; any other (or a step key such as ``uses:`` or ``if:``) fails the test, so
the action cannot grow a feature this emulation would silently skip.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from wheel_user import REPO, RUN_TIMEOUT_S, BuiltWheel, checked, new_venv, run, user_env

ACTION = REPO / "action.yml"
CI_DOC = REPO / "docs" / "ci.md"
EXAMPLE = REPO / "examples" / "dice"
#: ``${{ expression }}``, as the runner finds them.
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
STEP_KEYS = {"name", "id", "shell", "env", "run", "working-directory"}
#: The shell the runner starts for ``shell: bash``.
BASH = ("bash", "--noprofile", "--norc", "-eo", "pipefail")
#: Bound on one step (the install step fetches dependencies from the index).
STEP_TIMEOUT_S = 600.0


class StepFailedError(Exception):
    """A step exited non-zero; the message names it and carries its output."""


@dataclass(slots=True)
class _Context:
    inputs: dict[str, str]
    action_path: Path
    workspace: Path
    temp: Path
    steps: dict[str, dict[str, str]] = field(default_factory=dict)

    def evaluate(self, text: str) -> str:
        return EXPRESSION.sub(lambda found: self._value(found[1]), text)

    def _value(self, expression: str) -> str:
        parts = expression.split(".")
        if len(parts) == 2 and parts[0] == "inputs" and parts[1] in self.inputs:
            return self.inputs[parts[1]]
        if len(parts) == 4 and parts[0] == "steps" and parts[2] == "outputs":
            return self.steps.get(parts[1], {}).get(parts[3], "")
        known = {
            "github.action_path": str(self.action_path),
            "github.workspace": str(self.workspace),
            "runner.temp": str(self.temp),
        }
        if expression not in known:
            raise AssertionError(f"the emulated runner does not know the expression {expression!r}")
        return known[expression]


def _environment_file(path: Path) -> dict[str, str]:
    """``name=value`` and ``name<<DELIM`` ... ``DELIM`` lines, as the runner reads its environment files."""
    values: dict[str, str] = {}
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body: list[str] = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            else:
                raise AssertionError(f"{path.name}: no closing {delimiter!r}")
            values[name] = "\n".join(body)
        else:
            name, _, value = line.partition("=")
            values[name] = value
    return values


def run_action(
    action_file: Path, given: Mapping[str, str], *, env: Mapping[str, str], workspace: Path, temp: Path
) -> dict[str, str]:
    """Run a composite action's steps as the runner does; return its outputs (see the module docstring)."""
    action: dict[str, Any] = yaml.safe_load(action_file.read_text(encoding="utf-8"))
    assert action["runs"]["using"] == "composite"
    declared: dict[str, dict[str, Any]] = action.get("inputs", {})
    unknown = set(given) - set(declared)
    assert not unknown, f"inputs not declared by the action: {sorted(unknown)}"
    inputs = {}
    for name, spec in declared.items():
        if name in given:
            inputs[name] = given[name]
        else:
            assert not spec.get("required", False), f"required input {name!r} not given"
            inputs[name] = str(spec.get("default", ""))
    context = _Context(inputs=inputs, action_path=action_file.parent, workspace=workspace, temp=temp)
    added_env: dict[str, str] = {}
    added_path: list[str] = []
    for index, step in enumerate(action["runs"]["steps"]):
        assert set(step) <= STEP_KEYS, f"step {index}: keys the emulated runner does not run: {set(step)}"
        assert step["shell"] == "bash", f"step {index}: shell {step['shell']!r}"
        files = {
            name: temp / f"{name.lower()}_{index}" for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH")
        }
        for path in files.values():
            path.write_text("", encoding="utf-8")
        step_env = {**env, **added_env, **{name: str(path) for name, path in files.items()}}
        step_env["PATH"] = ":".join([*added_path, step_env["PATH"]])
        step_env |= {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_ACTION_PATH": str(action_file.parent),
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(temp),
        }
        step_env |= {name: context.evaluate(str(value)) for name, value in step.get("env", {}).items()}
        script = temp / f"step_{index}.sh"
        script.write_text(context.evaluate(step["run"]), encoding="utf-8")
        cwd = workspace / context.evaluate(step.get("working-directory", "."))
        done = run([*BASH, str(script)], timeout=STEP_TIMEOUT_S, env=step_env, cwd=cwd)
        if done.returncode != 0:
            name = step.get("name", f"step {index}")
            raise StepFailedError(f"{name}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        if "id" in step:
            context.steps[step["id"]] = _environment_file(files["GITHUB_OUTPUT"])
        added_env |= _environment_file(files["GITHUB_ENV"])
        added_path = [*reversed(files["GITHUB_PATH"].read_text(encoding="utf-8").split()), *added_path]
    return {name: context.evaluate(spec["value"]) for name, spec in action.get("outputs", {}).items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    venv: Path
    workspace: Path
    temp: Path

    @property
    def env(self) -> dict[str, str]:
        return user_env(self.venv)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> _Job:
    """A job's machine: a fresh venv (setup-python's stand-in: only pip in it), a checkout, a temp dir."""
    root = tmp_path_factory.mktemp("job")
    venv = new_venv(root / "python")
    workspace = root / "workspace"
    shutil.copytree(EXAMPLE, workspace, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (root / "temp").mkdir()
    return _Job(venv=venv, workspace=workspace, temp=root / "temp")


@pytest.fixture(scope="module")
def outputs(job: _Job, built_wheel: BuiltWheel) -> dict[str, str]:
    given = {
        "docker-dir": ".",
        "docker-uri": "dice:ci",
        "output-file": "dice.eif",
        "package": str(built_wheel.path),
    }
    return run_action(ACTION, given, env=job.env, workspace=job.workspace, temp=job.temp)


def test_the_outputs_are_the_pcrs_describe_eif_gives(job: _Job, outputs: dict[str, str]) -> None:
    eif = Path(outputs["eif-path"])
    assert eif == job.workspace / "dice.eif"
    described = checked(
        run(
            ["nitro-cli", "describe-eif", "--eif-path", str(eif)],
            timeout=RUN_TIMEOUT_S,
            env=job.env,
            cwd=job.workspace,
        )
    )
    measurements = json.loads(described.stdout)["Measurements"]
    assert {name: outputs[name] for name in ("pcr0", "pcr1", "pcr2")} == {
        "pcr0": measurements["PCR0"],
        "pcr1": measurements["PCR1"],
        "pcr2": measurements["PCR2"],
    }
    assert all(re.fullmatch("[0-9a-f]{96}", outputs[f"pcr{i}"]) for i in range(3))


def test_the_action_installed_the_wheel_into_the_jobs_python(job: _Job, outputs: dict[str, str]) -> None:
    nitro_cli = shutil.which("nitro-cli", path=job.env["PATH"])
    assert nitro_cli is not None
    assert Path(nitro_cli).parent == job.venv / "bin"


def test_a_dockerfile_error_fails_the_build_step_with_nitro_clis_line(
    job: _Job, built_wheel: BuiltWheel, outputs: dict[str, str]
) -> None:
    broken = job.workspace / "broken"
    broken.mkdir()
    (broken / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY missing.py /app/\n", encoding="utf-8")
    given = {"docker-dir": "broken", "output-file": "broken.eif", "package": str(built_wheel.path)}
    with pytest.raises(StepFailedError) as failed:
        run_action(ACTION, given, env=job.env, workspace=job.workspace, temp=job.temp)
    message = str(failed.value)
    assert message.startswith("Build the enclave image: exit ")
    assert "missing.py" in message
    assert "Traceback" not in message
    assert not (job.workspace / "broken.eif").exists()


def _workflows() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", CI_DOC.read_text(encoding="utf-8"), re.DOTALL)
    return [doc for doc in map(yaml.safe_load, blocks) if isinstance(doc, dict) and "jobs" in doc]


def test_the_documented_workflow_uses_only_what_the_action_declares() -> None:
    action = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    [workflow] = _workflows()
    uses = [
        (step.get("id"), step.get("with", {}))
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if str(step.get("uses", "")).split("@")[0].endswith("/attested-random")
    ]
    assert len(uses) == 1
    step_id, given = uses[0]
    assert set(given) <= set(action["inputs"])
    referenced = set(re.findall(rf"steps\.{step_id}\.outputs\.([\w-]+)", yaml.safe_dump(workflow)))
    assert referenced
    assert referenced <= set(action["outputs"])
