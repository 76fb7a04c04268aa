"""Watched files rewritten under a running kms-sim: no content at any instant stops it or crashes a worker.

The flake this reproduces (``test_sigv4_live``'s fixture, under load): a client that has seen the URL
line rewrites ``policy.json`` with ``write_text`` (truncate, then write). kms-sim printed the URL before
it built its service, so a slow start read the truncated file and exited ("not valid JSON"); a
``--workers`` process did the same and died with a traceback. Now one process serves the service it
checked before binding, a worker starting on a file mid-edit serves closed until the file loads, and
any later content that does not load keeps the previous value (kms.reload).

Each test starts a real ``kms-sim serve`` (``--workers`` 1 and 2, ``--reload-interval 0``: every request
looks at the files), rewrites a file non-atomically, byte by byte, while boto3 requests flow, then writes
the final content atomically and checks the server is running, says nothing of a traceback, and serves
with the final content.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from kms.state import default_policy

Server = Any

#: How many times a test rewrites its file byte by byte from a thread while requests flow.
CONCURRENT_ROUNDS = 3
#: The second principal a test adds (a temporary-credentials-free profile).
EXTRA_KEY = "AKIAEXTRAEXTRAEXTRA2"
EXTRA_SECRET = "e" * 40
WORKERS = [pytest.param("1", id="workers-1"), pytest.param("2", id="workers-2")]


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` by an atomic rename."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def _byte_by_byte(path: Path, text: str, *, each: Callable[[], None] = lambda: None) -> None:
    """Rewrite ``path`` in place one byte per write, calling ``each`` after the truncation and each byte."""
    data = text.encode()
    with path.open("wb", buffering=0) as handle:  # truncates: the empty file is a state too
        each()
        for index in range(len(data)):
            handle.write(data[index : index + 1])
            each()


def _credentials(home: Path) -> str:
    text = (home / "kms" / "credentials").read_text()
    return f"{text}\n[extra]\naws_access_key_id = {EXTRA_KEY}\naws_secret_access_key = {EXTRA_SECRET}\n"


def _policy() -> str:
    policy = default_policy()
    policy["extra"] = policy["nitro-sim"]
    return json.dumps(policy)


def _call(server: Server, client: Any, outcomes: dict[str, int]) -> None:
    """One GenerateRandom; its outcome counted by name. Any answer will do, no answer (server gone) not."""
    try:
        client.generate_random(NumberOfBytes=8)
        name = "ok"
    except ClientError as error:
        name = error.response["Error"]["Code"]
    except EndpointConnectionError:
        pytest.fail(f"kms-sim stopped answering; its output:\n{server.stderr[-3000:]}", pytrace=False)
    outcomes[name] = outcomes.get(name, 0) + 1


def _rewrite(server: Server, client: Any, path: Path, text: str) -> dict[str, int]:
    """Rewrite ``path`` byte by byte: once in lockstep (a request after each byte: every prefix is read),
    then :data:`CONCURRENT_ROUNDS` times from a thread while requests flow (reads racing the writes).
    """
    outcomes: dict[str, int] = {}
    _byte_by_byte(path, text, each=lambda: _call(server, client, outcomes))

    def rounds() -> None:
        for _ in range(CONCURRENT_ROUNDS):
            _byte_by_byte(path, text, each=lambda: time.sleep(0))  # let the requests' thread in

    writer = threading.Thread(target=rounds)
    writer.start()
    try:
        while writer.is_alive():
            _call(server, client, outcomes)
    finally:
        writer.join()
    return outcomes


def _still_serving(server: Server) -> None:
    assert server.process.running, server.stderr[-3000:]
    assert "Traceback" not in server.stderr
    assert "internal error" not in server.stderr


@pytest.mark.parametrize("workers", WORKERS)
def test_files_truncated_right_after_the_url_line_do_not_stop_it(
    start_server: Callable[..., Server], workers: str
) -> None:
    server = start_server("--workers", workers, "--reload-interval", "0")
    kms = server.home / "kms"
    credentials = (kms / "credentials").read_text()
    client = server.client()  # reads the credentials before they go
    # What the flaky fixture did, at its worst instant: every watched file empty as the server starts.
    for name in ("policy.json", "credentials", "faults.json"):
        (kms / name).write_text("")
    outcomes: dict[str, int] = {}
    _call(server, client, outcomes)
    _replace(kms / "credentials", credentials)
    _replace(kms / "policy.json", _policy())
    _replace(kms / "faults.json", "{}")
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8, outcomes
    _still_serving(server)


@pytest.mark.parametrize("workers", WORKERS)
def test_credentials_rewritten_byte_by_byte(start_server: Callable[..., Server], workers: str) -> None:
    server = start_server("--workers", workers, "--reload-interval", "0")
    path = server.home / "kms" / "credentials"
    final = _credentials(server.home)
    _replace(server.home / "kms" / "policy.json", _policy())
    client = server.client()
    outcomes = _rewrite(server, client, path, final)
    _replace(path, final)
    assert len(server.client("extra").generate_random(NumberOfBytes=8)["Plaintext"]) == 8, outcomes
    _still_serving(server)


@pytest.mark.parametrize("workers", WORKERS)
def test_policy_rewritten_byte_by_byte(start_server: Callable[..., Server], workers: str) -> None:
    server = start_server("--workers", workers, "--reload-interval", "0")
    path = server.home / "kms" / "policy.json"
    deny = json.dumps(
        {"nitro-sim": {"Statement": [{"Effect": "Deny", "Action": "kms:GenerateRandom", "Resource": "*"}]}}
    )
    client = server.client()
    outcomes = _rewrite(server, client, path, deny)
    _replace(path, deny)
    with pytest.raises(ClientError) as raised:
        client.generate_random(NumberOfBytes=8)
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException", outcomes
    _replace(path, _policy())
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    _still_serving(server)
    # Every prefix was read (the lockstep round): the first that did not load said so, in one line.
    assert "kms-sim: keeping the previous policy: policy file" in server.stderr
    if workers == "1":  # (with two, the worker that read the last byte may never have failed)
        assert "kms-sim: /" in server.stderr
        assert "loaded; the policy is in force" in server.stderr


@pytest.mark.parametrize("workers", WORKERS)
def test_faults_file_rewritten_byte_by_byte(start_server: Callable[..., Server], workers: str) -> None:
    server = start_server("--workers", workers, "--reload-interval", "0")
    path = server.home / "kms" / "faults.json"
    armed = json.dumps({"KMSInternalException": 1})
    client = server.client()
    outcomes = _rewrite(server, client, path, armed)
    # Only the fault the file names is ever injected; the rest of what was seen is served.
    assert set(outcomes) <= {"ok", "KMSInternalException"}, outcomes
    assert outcomes["KMSInternalException"] >= 1, outcomes  # the lockstep round's last byte armed one
    _replace(path, "{}")  # disarms, in every worker that looks
    _still_serving(server)


def test_one_process_serves_the_state_it_read_before_its_url_line(
    start_server: Callable[..., Server],
) -> None:
    # With an hour between looks, nothing written after the URL line is read: the policy in force is the
    # one read before it (the service is built before the line, not by uvicorn after it).
    server = start_server("--reload-interval", "3600")
    deny = {"nitro-sim": {"Statement": [{"Effect": "Deny", "Action": "kms:*", "Resource": "*"}]}}
    _replace(server.home / "kms" / "policy.json", json.dumps(deny))
    assert len(server.client().generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    _still_serving(server)
