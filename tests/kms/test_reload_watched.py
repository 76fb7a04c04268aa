"""kms.reload.Watched and the three loaders it watches, in process: whatever a loader raises on whatever
content, a running server keeps its previous value and says so once; a loader raises only SimulationError."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from attestation.errors import SimulationError
from kms.iam import load_policies
from kms.reload import Watched
from kms.server import load_faults
from kms.state import default_policy, load_principals

#: Random byte mutations tried per loader (on top of every prefix of a valid file).
MUTATIONS = 300

CREDENTIALS = (
    "[nitro-sim]\naws_access_key_id = AKIAAAAAAAAAAAAAAAAA\naws_secret_access_key = " + "s" * 40 + "\n\n"
    "[temp]\naws_access_key_id = ASIAAAAAAAAAAAAAAAAA\naws_secret_access_key = " + "t" * 40 + "\n"
    "aws_session_token = token\n"
)
POLICY = json.dumps(
    {
        **default_policy(),
        "temp": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["kms:Encrypt", "kms:Decrypt"],
                    "Resource": "arn:aws:kms:*:111122223333:key/*",
                    "Condition": {
                        "StringEquals": {"kms:EncryptionContext:a": "b"},
                        "Null": {"kms:X": "true"},
                    },
                }
            ],
        },
    },
    indent=2,
)
FAULTS = json.dumps({"KMSInternalException": 2, "ThrottlingException": 0})


def _contents(text: str, seed: int) -> list[bytes]:
    """Every prefix of ``text`` (a rewrite caught mid-way), then random byte flips and NUL runs."""
    data = text.encode()
    rng = random.Random(seed)
    out = [data[:i] for i in range(len(data) + 1)]
    for _ in range(MUTATIONS):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        out.append(bytes(flipped))
        cut = rng.randrange(len(data))
        out.append(data[:cut] + b"\0" * rng.randint(1, 64) + data[cut:])
    return out


@pytest.mark.parametrize(
    ("loader", "text"),
    [(load_principals, CREDENTIALS), (load_policies, POLICY), (load_faults, FAULTS)],
    ids=["credentials", "policy", "faults"],
)
def test_loaders_raise_only_simulation_error(
    tmp_path: Path, loader: Callable[[Path], Any], text: str
) -> None:
    path = tmp_path / "watched"
    messages = []
    for content in _contents(text, seed=len(text)):
        path.write_bytes(content)
        try:
            loader(path)
        except SimulationError as error:  # anything else fails the test
            messages.append(str(error))
    assert messages
    assert not [m for m in messages if "\n" in m]
    assert not [m for m in messages if "s" * 40 in m or "t" * 40 in m]  # never a secret


class _Flaky:
    """A loader that raises what it is told to (any type), else returns the file's text."""

    def __init__(self) -> None:
        self.error: Exception | None = None

    def __call__(self, path: Path) -> str:
        if self.error is not None:
            raise self.error
        return path.read_text()


@pytest.mark.parametrize(
    "error",
    [
        SimulationError("bad file"),
        KeyError("secret-key"),
        TypeError("x"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "no"),
    ],
    ids=["simulation-error", "key-error", "type-error", "unicode"],
)
def test_a_failing_reload_keeps_the_previous_value_and_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], error: Exception
) -> None:
    path = tmp_path / "watched"
    path.write_text("one")
    loader = _Flaky()
    watched = Watched(path, loader, what="thing", tick=0.0, recheck_s=0.0)
    loader.error = error
    path.write_text("two!")
    for tick in range(1, 4):
        assert watched.get(float(tick)) == "one"
        assert watched.failing
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("kms-sim: keeping the previous thing: ")
    assert "secret-key" not in lines[0]  # another exception's text may quote the file: only its type
    # A failing file is re-read at each look, even unchanged on disk (a rewrite in place can keep its
    # size and mtime tick): the first load that succeeds is in force and says so.
    loader.error = None
    assert watched.get(4.0) == "two!"
    assert not watched.failing
    assert capsys.readouterr().err == f"kms-sim: {path} loaded; the thing is in force\n"


def test_without_a_fallback_a_file_that_does_not_load_at_start_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "watched").write_text("")
    with pytest.raises(SimulationError, match="not valid JSON"):
        Watched(tmp_path / "watched", load_faults, what="faults file", tick=0.0)


def test_with_a_fallback_it_serves_that_until_the_file_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "faults.json"
    path.write_text('{"KMSInternalException": ')  # a worker starting while the file is half written
    watched = Watched(path, load_faults, what="faults file", tick=0.0, recheck_s=0.0, fallback={})
    assert watched.get(1.0) == {}
    assert capsys.readouterr().err.startswith(f"kms-sim: serving with no faults file until {path} loads: ")
    path.write_text('{"KMSInternalException": 1}')
    assert watched.get(2.0) == {"KMSInternalException": 1}


def test_the_recheck_interval_bounds_the_looks(tmp_path: Path) -> None:
    path = tmp_path / "watched"
    path.write_text("one")
    watched = Watched(path, _Flaky(), what="thing", tick=0.0, recheck_s=10.0)
    path.write_text("two!")
    assert watched.get(9.0) == "one"
    assert watched.get(10.0) == "two!"
