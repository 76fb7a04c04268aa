"""Starting our programs as a user would: ``kms-sim serve``, ``nsm-sim``, ``vsock-proxy`` (real processes).

Each helper starts one program in a :class:`nitro_sim.procs.ProcessGroup` (stopped when the group exits;
readiness and failures as that module rules), optionally pinned to one CPU, and returns how to reach it.
"""

from __future__ import annotations

import configparser
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Pinning
from bench.model import BenchError
from nitro_sim.procs import OutputLine, Process, ProcessError, ProcessGroup, UnixSocket, run
from nitro_sim.stack import program

#: The profile kms-sim writes into $NITRO_SIM_HOME/kms/credentials (interfaces.md, "KMS wire").
KMS_PROFILE = "nitro-sim"
#: The simulated enclave's CID for SDK clients (any CID above 3 works; nitro-cli starts at 16).
ENCLAVE_CID = 16
#: The vsock-proxy's local port, as the real service's default (aws-facts §5).
PROXY_PORT = 8000
#: Connections the proxy accepts at once (``-w``): above the largest concurrency measured.
PROXY_WORKERS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class KmsServer:
    proc: Process
    url: str
    port: int
    access_key: str
    secret_key: str
    region: str


def _credentials(home: Path) -> tuple[str, str, str]:
    creds = configparser.ConfigParser()
    creds.read(home / "kms" / "credentials")
    if not creds.has_section(KMS_PROFILE):
        raise BenchError(f"kms-sim wrote no [{KMS_PROFILE}] profile in {home / 'kms' / 'credentials'}")
    section = creds[KMS_PROFILE]
    config = configparser.ConfigParser()
    config.read(home / "kms" / "config")
    region = "us-east-1"
    for name in (f"profile {KMS_PROFILE}", KMS_PROFILE):
        if config.has_section(name):
            region = config[name].get("region", region)
    return section["aws_access_key_id"], section["aws_secret_access_key"], region


def kms_supports_workers() -> bool:
    """Whether ``kms-sim serve`` takes ``--workers`` (uvicorn worker processes sharing one socket)."""
    try:
        out = run([*program("kms-sim"), "serve", "--help"], name="kms-sim serve --help", check=False)
    except ProcessError:
        return False
    return "--workers" in out.stdout


def start_kms(
    procs: ProcessGroup,
    pinning: Pinning,
    home: Path,
    *,
    cpu: int | None,
    workers: int = 1,
    profile: Path | None = None,
) -> KmsServer:
    """``kms-sim serve --listen 127.0.0.1:0`` (plus ``--workers N`` when N > 1); reads the URL it prints."""
    cmd = [*program("kms-sim"), "serve", "--listen", "127.0.0.1:0"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    if profile is not None:  # CPU-time profile switched by SIGUSR1/SIGUSR2 (bench.profiled)
        cmd = [sys.executable, "-m", "bench.profiled", str(profile), *cmd]
    proc = procs.start(
        pinning.wrap(cmd, cpu),
        env={"NITRO_SIM_HOME": str(home)},
        name="kms-sim",
        ready=OutputLine(pattern=r"^https?://"),
    )
    url = (proc.ready_line or "").strip()
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"kms-sim printed {url[:80]!r}, not its URL")
    access_key, secret_key, region = _credentials(home)
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    return KmsServer(
        proc=proc, url=url, port=port, access_key=access_key, secret_key=secret_key, region=region
    )


def start_nsm(
    procs: ProcessGroup,
    pinning: Pinning,
    home: Path,
    *,
    cpu: int | None,
    index: int = 0,
    profile: Path | None = None,
) -> tuple[Path, Process]:
    """``nsm-sim --socket PATH``: a simulated NSM device (one per simulated enclave, as with nitro-cli)."""
    path = home / f"nsm{index}.sock"
    cmd = [*program("nsm-sim"), "--socket", str(path)]
    if profile is not None:
        cmd = [sys.executable, "-m", "bench.profiled", str(profile), *cmd]
    env = {"NITRO_SIM_HOME": str(home)}
    proc = procs.start(pinning.wrap(cmd, cpu), env=env, name="nsm-sim", ready=UnixSocket(path=path))
    return path, proc


def start_proxy(
    procs: ProcessGroup, pinning: Pinning, home: Path, *, cpu: int | None, target_port: int
) -> tuple[int, Process]:
    """``vsock-proxy 8000 127.0.0.1 PORT`` with an allowlist naming exactly 127.0.0.1 (nothing resolved)."""
    from attestation.sim import PARENT_CID, vsock_socket_path

    config = home / "vsock-proxy-kms.yaml"
    config.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {target_port}}}\n", encoding="utf-8")
    cmd = [*program("vsock-proxy"), "-w", str(PROXY_WORKERS), "--config", str(config)]
    cmd += [str(PROXY_PORT), "127.0.0.1", str(target_port)]
    ready = UnixSocket(path=vsock_socket_path(PARENT_CID, PROXY_PORT, home))
    proc = procs.start(
        pinning.wrap(cmd, cpu), env={"NITRO_SIM_HOME": str(home)}, name="vsock-proxy", ready=ready
    )
    return PROXY_PORT, proc


def enclave_env(home: Path, nsm_socket: Path) -> dict[str, str]:
    """The environment of a simulated enclave app (DESIGN.md, "Inside a simulated enclave")."""
    return {"NITRO_SIM_HOME": str(home), "NITRO_SIM_NSM": str(nsm_socket), "NITRO_SIM_CID": str(ENCLAVE_CID)}
