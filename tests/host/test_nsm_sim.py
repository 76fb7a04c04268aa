"""nsm-sim as a process: the wire protocol on a Unix socket, many clients, bad input, shutdown."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.document import decode_document, verify_signature
from attestation.errors import NSMError
from attestation.nsm_wire import MAX_REQUEST_BYTES, GetRandomResponse, decode_response, encode_frame
from enclave.nsm import NSMClient, SimulatedDeviceTransport
from host._nsm_framing import MAX_DISCARD_BYTES, TOO_LARGE, TOO_LARGE_CLOSE, Framer
from host.nsm_sim import main

PCR0 = hashlib.sha384(b"test image").hexdigest()
READY = "nsm-sim listening on "


def start_device(home: Path, socket_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NITRO_SIM_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "host.nsm_sim", "--socket", str(socket_path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY):
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"nsm-sim did not start: {line!r} {err!r}")
    assert line.strip() == READY + str(socket_path)
    return proc


def stop_device(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@pytest.fixture
def device(sim_home: Path) -> Iterator[Path]:
    path = sim_home / "nsm.sock"
    proc = start_device(sim_home, path, "--pcr", f"0={PCR0}")
    try:
        yield path
    finally:
        stop_device(proc)


@pytest.fixture
def client(device: Path) -> Iterator[NSMClient]:
    with NSMClient(SimulatedDeviceTransport(device)) as nsm:
        yield nsm


def raw_exchange(sock: socket.socket, body: bytes) -> object:
    sock.sendall(encode_frame(body))
    header = _recv(sock, 4)
    return decode_response(_recv(sock, int.from_bytes(header, "big")))


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_full_api_through_the_device(client: NSMClient, sim_home: Path) -> None:
    description = client.describe_nsm()
    assert description.max_pcrs == 32
    assert description.locked_pcrs == tuple(range(16))
    assert client.describe_pcr(0).data.hex() == PCR0
    extended = client.extend_pcr(16, b"app")
    assert extended == hashlib.sha384(bytes(48) + b"app").digest()
    client.lock_pcr(16)
    with pytest.raises(NSMError) as info:
        client.extend_pcr(16, b"again")
    assert info.value.code == "ReadOnlyIndex"
    client.lock_pcrs(20)
    assert len(client.get_random()) == 256
    raw = client.attestation(public_key=b"spki", nonce=b"nonce")
    signed = decode_document(raw)
    doc = signed.document
    assert doc.module_id == description.module_id
    assert doc.pcrs[0].hex() == PCR0
    assert doc.pcrs[16] == extended
    assert (doc.public_key, doc.nonce, doc.user_data) == (b"spki", b"nonce", None)
    root = x509.load_pem_x509_certificate((sim_home / "pki" / "root.crt").read_bytes())
    assert x509.load_der_x509_certificate(doc.cabundle[0]) == root
    key = x509.load_der_x509_certificate(doc.certificate).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    verify_signature(signed, key)


def test_errors_come_back_as_nsm_error_codes(client: NSMClient) -> None:
    for call, code in [
        (lambda: client.describe_pcr(32), "InvalidIndex"),
        (lambda: client.lock_pcr(2), "ReadOnlyIndex"),
        (lambda: client.lock_pcrs(33), "InvalidIndex"),
        (lambda: client.attestation(user_data=bytes(1025)), "InputTooLarge"),
        (lambda: client.extend_pcr(17, bytes(5000)), "InputTooLarge"),
    ]:
        with pytest.raises(NSMError) as info:
            call()
        assert info.value.code == code
    assert client.describe_pcr(1).lock  # the connection is still good


def test_bad_messages_never_kill_the_device(device: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(device))
        assert raw_exchange(sock, b"\xff\x00garbage").code == "InvalidArgument"  # type: ignore[attr-defined]
        assert raw_exchange(sock, b"").code == "InvalidArgument"  # type: ignore[attr-defined]
        assert raw_exchange(sock, cbor2.dumps("Reboot")).code == "InvalidArgument"  # type: ignore[attr-defined]
        oversized = cbor2.dumps({"ExtendPCR": {"index": 16, "data": bytes(6000)}})
        assert raw_exchange(sock, oversized).code == "InputTooLarge"  # type: ignore[attr-defined]
        assert raw_exchange(sock, cbor2.dumps("GetRandom")).random  # type: ignore[attr-defined]
    # A frame too large to drain closes that connection only.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(device))
        sock.sendall((10**7).to_bytes(4, "big"))
        header = _recv(sock, 4)
        assert decode_response(_recv(sock, int.from_bytes(header, "big"))).code == "InputTooLarge"  # type: ignore[union-attr]
        assert sock.recv(1) == b""
    # A client that leaves mid-frame.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(device))
        sock.sendall(b"\x00\x00\x01\x00abc")
    with NSMClient(SimulatedDeviceTransport(device)) as nsm:
        assert nsm.describe_nsm().max_pcrs == 32


def test_many_clients_at_once(device: Path) -> None:
    errors: list[BaseException] = []
    documents: list[bytes] = []

    def work(i: int) -> None:
        try:
            with NSMClient(SimulatedDeviceTransport(device)) as nsm:
                for _ in range(5):
                    documents.append(nsm.attestation(nonce=bytes([i])))
                    nsm.get_random()
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(documents) == 40
    assert len({decode_document(d).document.certificate for d in documents}) == 1  # one leaf, reused


def test_debug_mode_and_module_id(sim_home: Path) -> None:
    path = sim_home / "dbg.sock"
    module_id = "i-0123456789abcdef0-enc0123456789abcdef"
    proc = start_device(sim_home, path, "--debug-mode", "--pcr", f"0={PCR0}", "--module-id", module_id)
    try:
        with NSMClient(SimulatedDeviceTransport(path)) as nsm:
            doc = decode_document(nsm.attestation()).document
        assert doc.module_id == module_id
        assert doc.debug_mode
        assert doc.pcrs[4] != bytes(48)
    finally:
        stop_device(proc)


def test_sigterm_stops_cleanly_and_removes_the_socket(sim_home: Path) -> None:
    path = sim_home / "term.sock"
    proc = start_device(sim_home, path)
    with NSMClient(SimulatedDeviceTransport(path)) as nsm:
        nsm.describe_nsm()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not path.exists()


def test_stale_socket_is_replaced_and_live_one_refused(sim_home: Path) -> None:
    path = sim_home / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    proc = start_device(sim_home, path)
    try:
        with NSMClient(SimulatedDeviceTransport(path)) as nsm:
            assert nsm.describe_nsm().max_pcrs == 32
        env = {**os.environ, "NITRO_SIM_HOME": str(sim_home)}
        second = subprocess.run(
            [sys.executable, "-m", "host.nsm_sim", "--socket", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert second.returncode == 2
        assert "in use by another NSM device" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        stop_device(proc)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pcr", "16=" + "00" * 48], "boot PCR in 0..15"),
        (["--pcr", "0=zz"], "not hexadecimal"),
        (["--pcr", "0=00"], "48 bytes"),
        (["--pcr", "zero"], "N=HEX"),
        (["--pcr", "\u00b2=" + "00" * 48], "N=HEX"),  # "²": isdigit() but not int(); was exit 1, int's text
        (["--pcr", "1" * 5000 + "=" + "00" * 48], "boot PCR in 0..15"),  # past int()'s 4300 digits
        (["--pcr", "0" * 5000 + "7=" + "00" * 48 + "ff"], "48 bytes"),
        (["--module-id", "enclave-1"], "--module-id must be"),
        (["--idle-timeout", "0"], "--idle-timeout must be a number of seconds above 0"),
        (["--idle-timeout", "-1"], "--idle-timeout must be"),
        (["--idle-timeout", "nan"], "--idle-timeout must be"),
        (["--idle-timeout", "inf"], "--idle-timeout must be"),
        (["--idle-timeout", "1e400"], "--idle-timeout must be"),
        (["--idle-timeout", "86401"], "up to 86400"),
        (["--idle-timeout", "soon"], "got 'soon'"),
    ],
)
def test_bad_command_lines_are_one_line_errors(
    sim_home: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", str(sim_home / "x.sock"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_socket_path_too_long(sim_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", str(sim_home / ("d" * 120) / "x.sock")]) == 1
    assert "107-byte limit" in capsys.readouterr().err


def test_unusable_pki_state_is_a_one_line_error(
    sim_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (sim_home / "pki").mkdir()
    (sim_home / "pki" / "root.pem").write_bytes(b"not a certificate")
    monkeypatch.setenv("NITRO_SIM_HOME", str(sim_home))
    assert main(["--socket", str(sim_home / "x.sock")]) == 1
    err = capsys.readouterr().err
    assert "root.pem is not a certificate and key" in err
    assert err.count("\n") == 1


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "nsm-sim"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0
    assert "--socket" in result.stdout
    assert "--debug-mode" in result.stdout
    assert "--idle-timeout S" in result.stdout


# -- Framing (sans-IO) and pipelined or split requests ---------------------------------------------------

REQUEST = cbor2.dumps("GetRandom")


def _feed_bytewise(framer: Framer, data: bytes) -> list[object]:
    out: list[object] = []
    for i in range(len(data)):
        out.extend(framer.feed(data[i : i + 1]))
    return out


def test_one_whole_frame_per_read_is_the_body() -> None:
    assert Framer().feed(encode_frame(REQUEST)) == [REQUEST]


@pytest.mark.parametrize("chunking", ["whole", "bytewise"])
def test_pipelined_split_and_oversized_frames_come_out_in_order(chunking: str) -> None:
    big = bytes(MAX_REQUEST_BYTES + 1)
    stream = encode_frame(REQUEST) + encode_frame(b"") + encode_frame(big) + encode_frame(b"x" * 300)
    framer = Framer()
    out = framer.feed(stream) if chunking == "whole" else _feed_bytewise(framer, stream)
    assert out == [REQUEST, b"", TOO_LARGE, b"x" * 300]
    assert not framer.closed


def test_a_frame_too_large_to_drain_closes() -> None:
    framer = Framer()
    out = framer.feed((MAX_DISCARD_BYTES + 1).to_bytes(4, "big") + encode_frame(REQUEST))
    assert out == [TOO_LARGE_CLOSE]
    assert framer.closed
    assert framer.feed(encode_frame(REQUEST)) == []


def test_pipelined_and_split_requests_against_the_process(sim_home: Path) -> None:
    path = sim_home / "pipe.sock"
    proc = start_device(sim_home, path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            frame = encode_frame(REQUEST)
            sock.sendall(frame * 3 + frame[:3])  # three whole requests and the start of a fourth
            sock.sendall(frame[3:])
            for _ in range(4):
                body = _recv(sock, int.from_bytes(_recv(sock, 4), "big"))
                assert isinstance(decode_response(body), GetRandomResponse)
    finally:
        stop_device(proc)


def test_other_handled_signals_do_not_stop_the_device(sim_home: Path) -> None:
    """A host program (e.g. a profiler wrapper) may handle SIGUSR1; only SIGTERM/SIGINT stop the device."""
    path = sim_home / "usr1.sock"
    code = (
        "import signal, sys; signal.signal(signal.SIGUSR1, lambda *_: None); "
        "from host.nsm_sim import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "NITRO_SIM_HOME": str(sim_home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--socket", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(READY)
        with NSMClient(SimulatedDeviceTransport(path)) as nsm:
            nsm.describe_nsm()
            proc.send_signal(signal.SIGUSR1)
            assert len(nsm.get_random()) == 256  # still serving
            assert nsm.describe_nsm().max_pcrs == 32
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert not path.exists()
    finally:
        stop_device(proc)


def test_socket_directory_is_created_only_inside_the_home(
    sim_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "missing" / "dir"
    assert main(["--socket", str(outside / "x.sock")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not outside.parent.exists()
    # Inside the home, a file where the directory should be: the same usage error (was errno 17's text).
    (sim_home / "file").write_text("x")
    for parent in (sim_home / "file", sim_home / "file" / "deeper"):
        assert main(["--socket", str(parent / "x.sock")]) == 2
        err = capsys.readouterr().err
        assert err == f"nsm-sim: error: {parent} is not a directory\n"


def _shared_dag_key_map(levels: int, width: int) -> bytes:
    """``{DAG: 1}`` where DAG is nested shareable arrays (tag 28) of sharedrefs (tag 29) to the next level:
    ``width ** (levels - 1)`` leaves. tests/attestation/test_adversarial_cbor.py explains the attack."""

    def ref(index: int) -> bytes:
        return b"\xd8\x1d" + (bytes([index]) if index < 24 else bytes([0x18, index]))

    item = b"\xd8\x1c\x81\x00"
    for level in range(1, levels):
        head = bytes([0x80 + width]) if width < 24 else bytes([0x98, width])
        item = b"\xd8\x1c" + head + item + ref(levels - level) * (width - 1)
    return b"\xa1" + item + b"\x01"


def test_a_back_reference_bomb_is_refused_and_does_not_freeze_the_device(device: Path) -> None:
    # 732 bytes that cbor2 would spend ~4e9 hashes on, holding the GIL (every client froze): now refused.
    bomb = _shared_dag_key_map(7, 40)
    assert len(bomb) < MAX_REQUEST_BYTES
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as attacker:
        attacker.settimeout(30)
        attacker.connect(str(device))
        attacker.sendall(encode_frame(bomb))
        with NSMClient(SimulatedDeviceTransport(device)) as nsm:
            assert len(nsm.get_random()) == 256
        header = _recv(attacker, 4)
        answer = decode_response(_recv(attacker, int.from_bytes(header, "big")))
        assert answer.code == "InvalidArgument"  # type: ignore[union-attr]
        assert raw_exchange(attacker, cbor2.dumps("GetRandom")).random  # type: ignore[attr-defined]


def test_a_bignum_field_name_is_invalid_argument_not_internal_error(sim_home: Path) -> None:
    # {"ExtendPCR": {<2000-byte bignum>: 1}}: its error message raised ValueError (repr of an int past 4300
    # digits), so the device answered InternalError and logged an internal error; it is a bad request.
    path = sim_home / "nsm.sock"
    proc = start_device(sim_home, path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            request = cbor2.dumps({"ExtendPCR": {1 << (8 * 2000): 1}})
            assert len(request) < MAX_REQUEST_BYTES
            assert raw_exchange(sock, request).code == "InvalidArgument"  # type: ignore[attr-defined]
            assert raw_exchange(sock, cbor2.dumps("GetRandom")).random  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "internal error" not in err
    assert "Traceback" not in err


_CBOR_BOMBS = {
    "indefinite-map-never-ended": b"\xbf" + b"\x61a\x01" * 10,
    "indefinite-bytes-never-ended": b"\x5f" + b"\x41a" * 10,
    "declared-2**64-byte-string": b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
    "declared-2**56-item-array": b"\x9b\x00\xff\xff\xff\xff\xff\xff\xff",
    "declared-2**56-entry-map": b"\xbb\x00\xff\xff\xff\xff\xff\xff\xff",
    "nested-3000-arrays": b"\x81" * 3000 + b"\x00",
    "nested-2000-tags": b"\xc6" * 2000 + b"\x00",
    "bigfloat-huge-exponent": cbor2.dumps(cbor2.CBORTag(5, [10**18, 1])),
    "epoch-out-of-range": b"\xc1\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
    "regex-tag": cbor2.dumps(cbor2.CBORTag(35, "(a+)+$")),
    "invalid-utf8-text": b"\x62\xff\xfe",
    "index-2**64": cbor2.dumps({"ExtendPCR": {"index": 2**64, "data": b"x"}}),
    "variant-not-text": cbor2.dumps({1: {"index": 1}}),
    "stringref": bytes.fromhex("d901008363616263d81900d81900"),
    # cbor2's tag-261 decoder printed "Exception ignored ... Traceback" to the device's stderr for this one.
    "ip-network-holding-a-bignum": b"\xd9\x01\x05\xa1\x61x\x81" + cbor2.dumps(1 << (8 * 2000)),
}


def test_cbor_bombs_are_invalid_argument_and_the_device_serves_on(sim_home: Path) -> None:
    path = sim_home / "nsm.sock"
    proc = start_device(sim_home, path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            codes = {name: raw_exchange(sock, bomb).code for name, bomb in _CBOR_BOMBS.items()}  # type: ignore[attr-defined]
            assert raw_exchange(sock, cbor2.dumps("GetRandom")).random  # type: ignore[attr-defined]
        # Clients that leave mid-header, mid-body, or half-close after a request: only they end.
        for partial in (b"\x00\x00", b"\x00\x00\x01\x00" + b"\xa1" * 50):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(path))
                sock.sendall(partial)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(encode_frame(cbor2.dumps("DescribeNSM")))
            sock.shutdown(socket.SHUT_WR)
            header = _recv(sock, 4)
            assert decode_response(_recv(sock, int.from_bytes(header, "big"))).max_pcrs == 32  # type: ignore[union-attr]
            assert sock.recv(1) == b""
        with NSMClient(SimulatedDeviceTransport(path)) as nsm:
            assert nsm.describe_nsm().max_pcrs == 32
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert codes == dict.fromkeys(_CBOR_BOMBS, "InvalidArgument")
    assert "Traceback" not in err
    assert "internal error" not in err


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_connections_past_the_bound_are_closed_and_slots_come_back(sim_home: Path) -> None:
    from host.nsm_sim import MAX_CONNECTIONS

    path = sim_home / "nsm.sock"
    proc = start_device(sim_home, path)
    socks: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS + 20):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))  # blocking: waits in the backlog rather than failing with EAGAIN
            sock.settimeout(10)
            socks.append(sock)
        served = refused = 0
        for sock in socks:
            try:
                raw_exchange(sock, cbor2.dumps("DescribeNSM"))
            except (ConnectionError, OSError):
                refused += 1
            else:
                served += 1
        assert (served, refused) == (MAX_CONNECTIONS, 20)
        assert _threads(proc.pid) <= MAX_CONNECTIONS + 1  # one per connection, plus the accept loop
    finally:
        for sock in socks:
            sock.close()
    try:
        with NSMClient(SimulatedDeviceTransport(path)) as nsm:
            assert nsm.describe_nsm().max_pcrs == 32
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err
