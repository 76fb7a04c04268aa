"""Starting our programs as a user would: ``kms-sim serve``, ``nsm-sim``, ``vsock-proxy`` (real processes).

Each helper starts one program inside a :class:`~bench.procs.Processes` group (stopped when the group
exits), optionally pinned to one CPU, and returns how to reach it.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Pinning
from bench.procs import BenchError, Processes, read_line, tool, wait_for_unix_socket

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
    proc: subprocess.Popen[str]
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
        cmd = [tool("kms-sim"), "serve", "--help"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired, BenchError):
        return False
    return "--workers" in out.stdout


def start_kms(
    procs: Processes,
    pinning: Pinning,
    home: Path,
    *,
    cpu: int | None,
    workers: int = 1,
    profile: Path | None = None,
) -> KmsServer:
    """``kms-sim serve --listen 127.0.0.1:0`` (plus ``--workers N`` when N > 1); reads the URL it prints."""
    script = tool("kms-sim")
    cmd = [script, "serve", "--listen", "127.0.0.1:0"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    if profile is not None:  # CPU-time profile switched by SIGUSR1/SIGUSR2 (bench.profiled)
        cmd = [sys.executable, "-m", "bench.profiled", str(profile), *cmd]
    proc = procs.start(pinning.wrap(cmd, cpu), env={"NITRO_SIM_HOME": str(home)}, name="kms-sim")
    url = read_line(proc).strip()
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"kms-sim printed {url[:80]!r}, not its URL")
    access_key, secret_key, region = _credentials(home)
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    return KmsServer(
        proc=proc, url=url, port=port, access_key=access_key, secret_key=secret_key, region=region
    )


def start_nsm(
    procs: Processes,
    pinning: Pinning,
    home: Path,
    *,
    cpu: int | None,
    index: int = 0,
    profile: Path | None = None,
) -> tuple[Path, subprocess.Popen[str]]:
    """``nsm-sim --socket PATH``: a simulated NSM device (one per simulated enclave, as with nitro-cli)."""
    path = home / f"nsm{index}.sock"
    cmd = [tool("nsm-sim"), "--socket", str(path)]
    if profile is not None:
        cmd = [sys.executable, "-m", "bench.profiled", str(profile), *cmd]
    proc = procs.start(pinning.wrap(cmd, cpu), env={"NITRO_SIM_HOME": str(home)}, name="nsm-sim")
    wait_for_unix_socket(path, proc)
    return path, proc


def start_proxy(
    procs: Processes, pinning: Pinning, home: Path, *, cpu: int | None, target_port: int
) -> tuple[int, subprocess.Popen[str]]:
    """``vsock-proxy 8000 127.0.0.1 PORT`` with an allowlist naming exactly 127.0.0.1 (nothing resolved)."""
    from attestation.sim import PARENT_CID, vsock_socket_path

    config = home / "vsock-proxy-kms.yaml"
    config.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {target_port}}}\n", encoding="utf-8")
    cmd = [tool("vsock-proxy"), "-w", str(PROXY_WORKERS), "--config", str(config)]
    cmd += [str(PROXY_PORT), "127.0.0.1", str(target_port)]
    proc = procs.start(pinning.wrap(cmd, cpu), env={"NITRO_SIM_HOME": str(home)}, name="vsock-proxy")
    wait_for_unix_socket(vsock_socket_path(PARENT_CID, PROXY_PORT, home), proc)
    return PROXY_PORT, proc


def enclave_env(home: Path, nsm_socket: Path) -> dict[str, str]:
    """The environment of a simulated enclave app (DESIGN.md, "Inside a simulated enclave")."""
    return {"NITRO_SIM_HOME": str(home), "NITRO_SIM_NSM": str(nsm_socket), "NITRO_SIM_CID": str(ENCLAVE_CID)}
