"""The stress harness's own parts, in-process and fast: the leak scan, the ledger, the tap's answer
handling, the classification of failures, the /proc sampling."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

import pytest

from stress import sampling
from stress.faults import TRANSPORT, Window, classify
from stress.leaks import CHUNK, MIN_NEEDLE_BYTES, Needles, forms
from stress.ledger import AuditBook, Ledger, dropped_by_kms_sim, read_audit
from stress.tap import Tap, _Conn

# -- the leak scan -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", range(5), ids=["raw", "hex", "HEX", "base64", "base64url"])
def test_scan_finds_every_form_at_every_alignment(form: int) -> None:
    value = secrets.token_bytes(32)
    needles = Needles()
    needles.add_value(value, "plaintext")
    needle = [value, value.hex().encode(), value.hex().upper().encode(), *_b64(value)][form]
    for offset in range(CHUNK + 3):
        haystack = secrets.token_bytes(1000 + offset) + needle + secrets.token_bytes(77)
        leaks, allowed = needles.scan(haystack, "somewhere")
        assert [(f.where, f.kind) for f in leaks] == [("somewhere", "plaintext")]
        assert allowed == []


def _b64(value: bytes) -> tuple[bytes, bytes]:
    plain = base64.b64encode(value).rstrip(b"=")
    return plain, base64.urlsafe_b64encode(value).rstrip(b"=")


def test_a_value_is_searched_in_each_form_once() -> None:
    value = bytes(range(32))  # no "+" or "/" in its base64: both base64 forms are the same bytes
    assert len(forms(value)) == 4


def test_scan_finds_nothing_that_is_not_there_and_spares_a_secrets_home() -> None:
    needles = Needles()
    secret = secrets.token_bytes(40)
    needles.add_value(secret, "secret", home={"home/kms/credentials"})
    assert needles.scan(secrets.token_bytes(100_000) + secret[:-1], "logs/x.log") == ([], [])
    leaks, allowed = needles.scan(b"x" + secret.hex().encode(), "home/kms/credentials")
    assert leaks == []
    assert [f.kind for f in allowed] == ["secret"]
    assert needles.kinds() == {"secret": len(forms(secret))}


def test_scan_finds_a_pem_of_a_private_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    numbers = key.private_numbers()
    needles = Needles()
    needles.add_private_key(der, (numbers.d, numbers.p, numbers.q), "key")
    for haystack in (pem.replace(b"\n", b""), der, der.hex().encode(), b"log: " + base64.b64encode(der)):
        assert needles.scan(haystack, "log")[0], haystack[:40]


def test_a_needle_shorter_than_the_scan_can_promise_is_refused() -> None:
    with pytest.raises(ValueError, match="needle"):
        Needles().add(b"x" * (MIN_NEEDLE_BYTES - 1), "short")


# -- the ledger --------------------------------------------------------------------------------------------


def _record(request_id: str, event: str = "GenerateRandom", error: str | None = None) -> bytes:
    record: dict[str, object] = {"requestID": request_id, "eventName": event}
    if error is not None:
        record["errorCode"] = error
    return json.dumps(record).encode()


def test_audit_lines_that_do_not_parse_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(
        _record("a") + b"\n" + b'{"requestID": "b", "eventNa' + b"\n" + _record("c") + b"\n" + b'{"x'
    )
    book = read_audit(path)
    assert set(book.records) == {"a", "c"}
    assert book.corrupt == [2, 4]


def test_missing_records_are_lost_unless_kms_sim_counted_them_while_the_disk_was_full() -> None:
    book = AuditBook(records={"a": {"requestID": "a", "eventName": "GenerateRandom"}}, lines=1)
    answered = [("a", 5), ("b", 15), ("c", 16), ("d", 30)]
    ledger = Ledger()
    ledger.settle(
        book,
        answered=answered,
        disk_full=[(10, 20)],
        dropped_reported=2,
        stores=[("cks-1", "r1")],
        store_rows={"cks-1"},
        integrity="ok",
    )
    assert (ledger.recorded, ledger.missing_in_disk_full, ledger.missing_outside) == (1, 2, 1)
    assert ledger.lost == 1 + 1  # "d", and the key store's create has no audit record
    assert ledger.key_store_records_missing == 1
    assert not ledger.corrupt


def test_kms_sims_own_count_of_dropped_records_is_read() -> None:
    log = (
        "kms-sim: cannot write the audit log (File too large); records are lost until it can\n"
        "kms-sim: the audit log is writable again; 7 record(s) were lost\n"
        "kms-sim: the audit log is writable again; 5 record(s) were lost\n"
    )
    assert dropped_by_kms_sim(log) == (12, 1)


# -- the tap -----------------------------------------------------------------------------------------------


def _answer(request_id: str, blob: bytes) -> bytes:
    body = b'{"CiphertextForRecipient":"%s"}' % base64.b64encode(blob)
    head = b"HTTP/1.1 200 OK\r\nx-amzn-requestid: %s\r\ncontent-length: %d\r\n\r\n" % (
        request_id.encode(),
        len(body),
    )
    return head + body


def test_the_tap_forwards_whole_answers_and_swaps_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (tmp_path / "capture").open("wb") as capture:
        tap = Tap(tmp_path / "no-socket", capture)
        conn = _Conn(pid=42)
        first = _answer("id-1", b"A" * 300)
        assert tap.answers(conn, first[:50]) == b""  # held until whole
        assert tap.answers(conn, first[50:]) == first
        assert tap.last[42][0] == "id-1"
        other = base64.b64encode(b"B" * 300)
        tap.command(f"swap 42 {other.decode()}")
        second = _answer("id-2", b"C" * 300)
        swapped = tap.answers(conn, second)
        assert swapped == second.replace(base64.b64encode(b"C" * 300), other)
        assert tap.answers(conn, second) == second  # the swap is used once
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"armed": True}, {"swapped": "id-2", "pid": 42}]


def test_the_tap_relays_what_is_not_http_untouched(tmp_path: Path) -> None:
    with (tmp_path / "capture").open("wb") as capture:
        tap = Tap(tmp_path / "no-socket", capture)
        conn = _Conn(pid=1)
        assert tap.answers(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello") != b""
        assert conn.raw
        assert tap.answers(conn, b"anything") == b"anything"


# -- classification ----------------------------------------------------------------------------------------


def test_a_failure_is_expected_only_inside_its_faults_window_and_limit() -> None:
    crash = Window(name="crash", start_ns=100, end_ns=200, errors=TRANSPORT)
    swap = Window(
        name="swap",
        start_ns=0,
        end_ns=10**12,
        errors=frozenset({"DecryptionError"}),
        clients=frozenset({1}),
        limit=1,
    )
    failure = {"err": "EndpointConnectionError", "code": None, "t0": 150, "t1": 160}
    assert classify(0, failure, [crash, swap]) == "crash"
    assert classify(0, {**failure, "t0": 10**11, "t1": 10**11 + 1}, [crash]) is None  # long after it
    assert classify(0, {**failure, "err": "OSError"}, [crash]) is None  # not a documented SDK error
    decryption = {"err": "DecryptionError", "code": None, "t0": 5, "t1": 6}
    assert classify(0, decryption, [swap]) is None  # not the client it was handed to
    assert classify(1, decryption, [swap]) == "swap"
    assert classify(1, decryption, [swap]) is None  # exactly one is expected


# -- /proc -------------------------------------------------------------------------------------------------


def test_this_process_is_sampled() -> None:
    usage = sampling.usage(os.getpid())
    assert usage is not None
    assert usage.fds > 0
    assert usage.threads >= 1
    assert usage.rss_kib > 0
    assert sampling.flat(usage, usage)
    assert not sampling.flat(
        usage, sampling.Usage(pid=usage.pid, fds=usage.fds + 1, threads=usage.threads, rss_kib=usage.rss_kib)
    )
    assert b"pytest" in sampling.process_text(os.getpid())
