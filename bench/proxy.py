"""Scenario 5: ``vsock-proxy`` alone against ``socat`` relaying the same traffic on the same machine.

Both relays listen on a Unix socket (the simulated vsock ``(3, port)`` for vsock-proxy, a plain path for
socat) and relay to the same TCP sink on 127.0.0.1 (:mod:`bench.sink`). The client is this process.
Measured, rounds interleaved relay by relay:
- one stream, upload (enclave -> remote) and download (remote -> enclave), MB/s;
- connections/s: connect, one byte there and back, close, sequentially.
Layout: the relay on CPU 1, the client and the sink on CPU 0 (the relay gets a core of its own, so the
numbers measure the relay, not the endpoints).
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import Pinning, Settings, Summary, pinned_self, summarize
from bench.model import BenchError, Ratio, Row, ScenarioResult, reason
from nitro_sim.procs import OutputLine, ProcessError, ProcessGroup, UnixSocket
from nitro_sim.stack import program

RELAY_CPU = 1
ENDPOINT_CPU = 0
PROXY_PORT = 8000
CHUNK = 1 << 20
MB = 1_000_000
#: Upper bound on connections of one connection-rate round (keeps TIME_WAIT sockets in check).
MAX_CONNECTIONS_PER_ROUND = 20_000


def _connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    return s


def upload(path: Path, size: int) -> float:
    """Seconds to push ``size`` bytes through the relay until the sink acknowledges the last one."""
    payload = memoryview(bytearray(CHUNK))
    start = time.perf_counter()
    with _connect(path) as s:
        s.sendall(b"U" + size.to_bytes(8, "big"))
        left = size
        while left:
            n = min(left, CHUNK)
            s.sendall(payload[:n])
            left -= n
        if s.recv(1) != b"K":
            raise BenchError("upload: the sink did not acknowledge")
    return time.perf_counter() - start


def download(path: Path, size: int) -> float:
    buffer = bytearray(CHUNK)
    start = time.perf_counter()
    with _connect(path) as s:
        s.sendall(b"D" + size.to_bytes(8, "big"))
        left = size
        while left:
            got = s.recv_into(buffer, min(left, CHUNK))
            if got == 0:
                raise BenchError("download: the relay closed early")
            left -= got
    return time.perf_counter() - start


def connections(path: Path, seconds: float) -> float:
    """Sequential connections per second, each with a one-byte exchange through the relay."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline and count < MAX_CONNECTIONS_PER_ROUND:
        with _connect(path) as s:
            s.sendall(b"P")
            if s.recv(1) != b"P":
                raise BenchError("ping: no answer through the relay")
        count += 1
    return count / (time.perf_counter() - start)


def _start_relays(
    procs: ProcessGroup, pinning: Pinning, home: Path, sink_port: int, notes: list[str]
) -> dict[str, Path]:
    config = home / "vsock-proxy.yaml"
    # The allowlist names 127.0.0.1 exactly, so the proxy accepts it without resolving any name.
    config.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {sink_port}}}\n", encoding="utf-8")
    env = {"NITRO_SIM_HOME": str(home)}
    from attestation.sim import vsock_socket_path

    proxy_path = vsock_socket_path(3, PROXY_PORT, home)
    relays: dict[str, Path] = {}
    try:
        proxy_cmd = [*program("vsock-proxy"), "-w", "64", "--config", str(config), str(PROXY_PORT)]
        procs.start(
            pinning.wrap([*proxy_cmd, "127.0.0.1", str(sink_port)], RELAY_CPU),
            env=env,
            name="vsock-proxy",
            ready=UnixSocket(path=proxy_path),
        )
        relays["vsock-proxy"] = proxy_path
    except ProcessError as e:
        notes.append(f"vsock-proxy not measured: {reason(e)}")
    socat = shutil.which("socat")
    if socat is None:
        notes.append("socat not measured: not installed (make bench installs it from Debian's packages)")
        return relays
    for label, extra in (("socat", []), ("socat -b 262144", ["-b", "262144"])):
        path = home / f"socat{len(relays)}.sock"
        cmd = [socat, *extra, f"UNIX-LISTEN:{path},fork,backlog=128", f"TCP:127.0.0.1:{sink_port}"]
        procs.start(pinning.wrap(cmd, RELAY_CPU), name="socat", ready=UnixSocket(path=path))
        relays[label] = path
    return relays


TITLE = "Proxy alone: vsock-proxy vs socat (Unix socket -> TCP)"


def run(
    settings: Settings, pinning: Pinning, home: Path, procs: ProcessGroup, result: ScenarioResult
) -> None:
    sink = procs.start(
        pinning.wrap([sys.executable, "-m", "bench.sink"], ENDPOINT_CPU),
        name="sink",
        ready=OutputLine(pattern=r"^tcp://127\.0\.0\.1:\d+$"),
    )
    sink_port = int((sink.ready_line or "").rsplit(":", 1)[1])
    relays = _start_relays(procs, pinning, home, sink_port, result.notes)
    if not relays:
        raise BenchError("neither vsock-proxy nor socat could be started")
    layout = pinning.describe(f"relay CPU {RELAY_CPU}; client, sink CPU {ENDPOINT_CPU}")
    size = settings.proxy_bytes
    tests: dict[str, tuple[str, Callable[[Path], float]]] = {
        "upload": ("MB/s", lambda p: size / MB / upload(p, size)),
        "download": ("MB/s", lambda p: size / MB / download(p, size)),
        "connections": ("conn/s", lambda p: connections(p, settings.round_seconds)),
    }
    values: dict[tuple[str, str], list[float]] = {(r, t): [] for r in relays for t in tests}
    with pinned_self(pinning, ENDPOINT_CPU):
        for path in relays.values():  # warm-up: one small pass of each test
            upload(path, min(size, 8 * CHUNK))
            download(path, min(size, 8 * CHUNK))
            connections(path, settings.warmup_seconds / 4)
        for _ in range(settings.rounds):
            for test, (_, fn) in tests.items():
                for relay, path in relays.items():
                    values[(relay, test)].append(fn(path))
    summaries: dict[tuple[str, str], Summary] = {k: summarize(v) for k, v in values.items()}
    for test, (unit, _) in tests.items():
        for relay in relays:
            result.rows.append(
                Row(case=f"{relay}: {test}", unit=unit, value=summaries[(relay, test)], layout=layout)
            )
    for test in tests if "vsock-proxy" in relays else ():
        ours = summaries[("vsock-proxy", test)].median
        for ref in ("socat", "socat -b 262144"):
            if ref not in relays:
                continue
            target = 0.8 if ref == "socat" and test != "connections" else None
            name = f"vsock-proxy / {ref}, {test}"
            result.ratios.append(Ratio(name=name, value=ours / summaries[(ref, test)].median, target=target))
    result.notes.append(
        f"One stream of {size / 2**20:,.0f} MiB per round and direction; socat is Debian's, run as "
        "`socat UNIX-LISTEN:PATH,fork TCP:127.0.0.1:PORT` (default 8 KiB buffer; also shown with -b 262144); "
        "vsock-proxy is ours, `vsock-proxy -w 64 --config ALLOWLIST 8000 127.0.0.1 PORT`."
    )
    result.data["bytes_per_round"] = size
