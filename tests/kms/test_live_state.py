"""State changed while kms-sim runs: the faults file; with ``--reload-interval 0``, at the next request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from attestation.errors import SimulationError
from kms.reload import Watched
from kms.server import MAX_FAULT_COUNT, MAX_FAULTS_FILE_BYTES, load_faults
from kms.service import INJECTABLE_FAULTS, FaultInjector

Server = Any


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` by an atomic rename, as a harness does."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def test_missing_faults_file_arms_nothing(tmp_path: Path) -> None:
    assert load_faults(tmp_path / "faults.json") == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "is not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"NoSuchException": 1}', "cannot inject 'NoSuchException'"),
        ('{"KMSInternalException": -1}', "must be a count in 0.."),
        ('{"KMSInternalException": true}', "must be a count in 0.."),
        ('{"KMSInternalException": 1.5}', "must be a count in 0.."),
        (json.dumps({"KMSInternalException": MAX_FAULT_COUNT + 1}), "must be a count in 0.."),
        ("[" * 10_000, "is not valid JSON"),
        (" " * (MAX_FAULTS_FILE_BYTES + 1), "is over"),
    ],
    ids=["truncated", "list", "unknown-name", "negative", "bool", "float", "over-bound", "deep", "huge"],
)
def test_bad_faults_file_is_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "faults.json"
    path.write_text(text)
    with pytest.raises(SimulationError, match=fragment) as caught:
        load_faults(path)
    assert "\n" not in str(caught.value)


def test_arm_sets_the_named_counts_and_keeps_the_others() -> None:
    injector = FaultInjector({"ThrottlingException": 1}, {})
    injector.arm({"KMSInternalException": 1})
    names = []
    for _ in range(2):
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the injected classes differ per call
            injector.check()
        names.append(type(caught.value).__name__)
    assert sorted(names) == ["KMSInternalException", "ThrottlingException"]
    injector.check()  # both used up
    injector.arm({"KMSInternalException": 3})
    injector.arm({"KMSInternalException": 0})  # 0 clears
    injector.check()
    with pytest.raises(ValueError, match="cannot inject"):
        injector.arm({"Nope": 1})


def test_reload_interval_zero_sees_a_rename_on_the_next_get(tmp_path: Path) -> None:
    path = tmp_path / "value.txt"
    path.write_text("one")
    watched = Watched(path, Path.read_text, what="value", tick=0.0, recheck_s=0.0)
    _replace(path, "two")
    assert watched.get(0.0) == "two"  # same tick: nothing is waited for


def test_default_reload_interval_waits_a_second(tmp_path: Path) -> None:
    path = tmp_path / "value.txt"
    path.write_text("one")
    watched = Watched(path, Path.read_text, what="value", tick=0.0)
    _replace(path, "two")
    assert watched.get(0.5) == "one"
    assert watched.get(1.0) == "two"


@pytest.mark.parametrize("interval", [-1.0, float("nan"), 3601.0])
def test_reload_interval_out_of_range(tmp_path: Path, interval: float) -> None:
    with pytest.raises(ValueError, match="reload interval must be"):
        Watched(tmp_path / "x", lambda _: None, what="x", tick=0.0, recheck_s=interval)


def test_faults_file_arms_a_running_server(start_server: Callable[..., Server]) -> None:
    server = start_server("--reload-interval", "0")
    client = server.client()
    faults = server.home / "kms" / "faults.json"
    _replace(faults, json.dumps({"DependencyTimeoutException": 1, "KMSInternalException": 1}))
    with pytest.raises(client.exceptions.DependencyTimeoutException):
        client.generate_random(NumberOfBytes=8)
    with pytest.raises(client.exceptions.KMSInternalException):
        client.generate_random(NumberOfBytes=8)
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    # The same content again, written anew, arms again; a bad edit arms nothing and says so.
    for _ in range(2):
        _replace(faults, json.dumps({"KMSInternalException": 1}))
        with pytest.raises(client.exceptions.KMSInternalException):
            client.generate_random(NumberOfBytes=8)
        assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    _replace(faults, '{"KMSInternalException": "many"}')
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    server.stop()
    assert "kms-sim: keeping the previous faults file" in server.stderr


def test_faults_file_at_start_overrides_the_flag_for_the_names_it_gives(
    start_server: Callable[..., Server], aws_env: Path
) -> None:
    (aws_env / "kms").mkdir(mode=0o700, exist_ok=True)
    (aws_env / "kms" / "faults.json").write_text('{"ThrottlingException": 1}')
    client = start_server("--fault", "ThrottlingException:3", "--fault", "KMSInternalException:1").client()
    errors = []
    for _ in range(2):
        with pytest.raises(client.exceptions.ClientError) as caught:
            client.generate_random(NumberOfBytes=8)
        errors.append(caught.value.response["Error"]["Code"])
    assert errors == ["ThrottlingException", "KMSInternalException"]
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def test_policy_edit_is_in_force_for_the_next_request(start_server: Callable[..., Server]) -> None:
    server = start_server("--reload-interval", "0")
    client = server.client()
    assert len(client.generate_random(NumberOfBytes=4)["Plaintext"]) == 4
    deny = {"Statement": [{"Effect": "Deny", "Action": "kms:GenerateRandom", "Resource": "*"}]}
    _replace(server.home / "kms" / "policy.json", json.dumps({"nitro-sim": deny}))
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.generate_random(NumberOfBytes=4)
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"


def test_bad_faults_file_at_start_is_a_one_line_error(aws_env: Path) -> None:
    (aws_env / "kms").mkdir(mode=0o700, exist_ok=True)
    (aws_env / "kms" / "faults.json").write_text('{"Nope": 1}')
    result = subprocess.run(
        [sys.executable, "-m", "kms.cli", "serve", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.count("\n") == 1
    assert "cannot inject 'Nope'" in result.stderr


@pytest.mark.parametrize("value", ["-1", "nan", "3601", "soon"])
def test_reload_interval_flag_is_checked(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from kms.cli import main

    assert main(["serve", "--reload-interval", value]) == 2
    assert "--reload-interval" in capsys.readouterr().err


def test_injectable_names_are_listed() -> None:
    assert INJECTABLE_FAULTS == ("DependencyTimeoutException", "KMSInternalException", "ThrottlingException")
