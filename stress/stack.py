"""The stress topology, started, crashed and restarted through :mod:`nitro_sim.procs` / ``.stack``.

    client i (stress.worker) ──(vsock 3:8000)──► tap ──(vsock 3:8001)──► vsock-proxy ──TCP──► kms-sim
        └──(NITRO_SIM_NSM)──► nsm-sim i                                                    --workers 2
    operator (boto3, this process) ──TCP──► kms-sim: CreateCustomKeyStore

Every process is in one :class:`ProcessGroup` (stopped on exit, Ctrl-C included); the home is fresh and
short (Unix socket paths). kms-sim serves a policy that allows GenerateRandom only to the clients' image
(``kms:RecipientAttestation:ImageSha384``) and the key-store operations to the operator. The tap
(:mod:`stress.tap`) stands where the clients connect; it relays to vsock-proxy's socket unchanged.

Crashes are ``SIGKILL`` (``kill -9``): to kms-sim's process group (supervisor and workers), to one kms-sim
worker (its supervisor starts another), to vsock-proxy, to one nsm-sim, to one client. Each service is
then started again with the same command line by :meth:`ProcessGroup.restart`, as a service manager would:
no file is cleaned up, nothing is repaired by hand.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attestation.pki import SimulatedPKI
from attestation.sim import ENV_CID, ENV_HOME, ENV_NSM, PARENT_CID, vsock_socket_path
from kms.state import DEFAULT_PROFILE
from nitro_sim.procs import OutputLine, Process, ProcessError, ProcessGroup, UnixSocket
from nitro_sim.stack import (
    ENV_KMS_TLS,
    FIRST_NSM_CID,
    KmsSim,
    Nsm,
    VsockProxy,
    child_environment,
    image_policy,
)
from stress import sampling

__all__ = ["CLIENT_PORT", "IMAGE_PCR0", "PROXY_PORT", "Stack", "StackSettings"]

#: The parent's vsock port the clients use (the SDK's default); the tap listens there.
CLIENT_PORT = 8000
#: vsock-proxy's own port behind the tap.
PROXY_PORT = 8001
#: PCR0 of the clients' (simulated) enclave image; the policy allows GenerateRandom only to it.
IMAGE_PCR0 = "5a" * 48
#: vsock-proxy's ``-w``: connections at once (16 clients, 3 hostile ones, reconnects in flight).
PROXY_CONNECTIONS = 64
#: Bound on how long a restarted kms-sim may take to have all its workers again.
WORKERS_TIMEOUT_S = 30.0
#: What kms-sim's worker processes have in their argv (multiprocessing's spawn start method).
_WORKER_MARK = b"multiprocessing.spawn"
#: How often a wait looks again.
POLL_S = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class StackSettings:
    clients: int
    kms_workers: int
    request_timeout_s: float


def stress_policy() -> dict[str, Any]:
    """GenerateRandom for the clients' image only; the key-store operations for the operator."""
    policy = image_policy(IMAGE_PCR0)
    statement = {
        "Effect": "Allow",
        "Action": ["kms:CreateCustomKeyStore", "kms:DescribeCustomKeyStores"],
        "Resource": "*",
    }
    policy[DEFAULT_PROFILE]["Statement"].append(statement)
    return policy


class Stack:
    """kms-sim, vsock-proxy, the tap and one nsm-sim per client, in ``run_dir`` (home and logs)."""

    def __init__(self, run_dir: Path, settings: StackSettings) -> None:
        self.settings = settings
        self.home = run_dir / "home"
        self.logs = run_dir / "logs"
        self.capture = run_dir / "capture.bin"
        self.home.mkdir(mode=0o700, parents=True)
        env = child_environment(self.home) | {
            # No developer's ~/.aws: clients find kms-sim's credentials in the home (the SDK's rule)
            "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "no-such-file"),
            ENV_KMS_TLS: "0",
        }
        self.group = ProcessGroup(self.logs, env=env)
        self.kms: KmsSim
        self.proxy: VsockProxy
        self.tap: Process
        self.nsms: list[Nsm] = []

    @property
    def client_socket(self) -> Path:
        return vsock_socket_path(PARENT_CID, CLIENT_PORT, self.home)

    def start(self) -> None:
        SimulatedPKI.load_or_create(self.home, at=datetime.now(UTC))
        policy = self.home / "stress-policy.json"
        policy.write_text(json.dumps(stress_policy(), indent=2) + "\n", encoding="utf-8")
        args = [
            "--workers",
            str(self.settings.kms_workers),
            "--request-timeout",
            f"{self.settings.request_timeout_s:g}",
        ]
        self.kms = KmsSim.spawn(self.group, self.home, policy=policy, reload="1", args=args)
        self.nsms = [
            Nsm.spawn(self.group, self.home, cid=FIRST_NSM_CID + i, pcrs={0: IMAGE_PCR0}, name=f"c{i}")
            for i in range(self.settings.clients)
        ]
        self.kms.wait_ready()
        self.wait_workers(exclude=())
        self.proxy = VsockProxy.spawn(
            self.group, self.home, self.kms, port=PROXY_PORT, workers=PROXY_CONNECTIONS
        )
        self.proxy.wait_ready()
        self.tap = self.group.start(
            [
                sys.executable,
                "-m",
                "stress.tap",
                "--listen",
                str(self.client_socket),
                "--upstream",
                str(self.proxy.socket),
                "--capture",
                str(self.capture),
            ],
            name="tap",
            talk=True,
            ready=UnixSocket(path=self.client_socket),
        )
        for nsm in self.nsms:
            nsm.wait_ready()

    def client_env(self, index: int) -> dict[str, str]:
        nsm = self.nsms[index]
        return {ENV_HOME: str(self.home), ENV_NSM: str(nsm.socket), ENV_CID: str(nsm.cid)}

    # -- what is running -----------------------------------------------------------------------------------

    def kms_workers(self) -> list[int]:
        """kms-sim's uvicorn workers: the children its supervisor spawned (multiprocessing's ``spawn_main``;
        its other child is multiprocessing's resource tracker)."""
        return [
            pid for pid in sampling.children(self.kms.process.pid) if _WORKER_MARK in sampling.cmdline(pid)
        ]

    def kms_helpers(self) -> list[int]:
        """kms-sim's other children (multiprocessing's resource tracker)."""
        workers = set(self.kms_workers())
        return [pid for pid in sampling.children(self.kms.process.pid) if pid not in workers]

    def wait_workers(self, *, exclude: tuple[int, ...]) -> list[int]:
        """kms-sim's workers once all are up (none of ``exclude``); ProcessError past the bound."""
        deadline = time.monotonic() + WORKERS_TIMEOUT_S
        while True:
            workers = self.kms_workers()
            if len(workers) == self.settings.kms_workers and not set(workers) & set(exclude):
                return workers
            if time.monotonic() > deadline:
                raise ProcessError(f"kms-sim has workers {workers} after {WORKERS_TIMEOUT_S:g} s")
            time.sleep(POLL_S)

    def services(self) -> dict[str, int]:
        """Role -> pid of every service process: kms-sim's supervisor and workers, the proxy, each nsm-sim."""
        roles = {"kms-sim supervisor": self.kms.process.pid, "vsock-proxy": self.proxy.process.pid}
        for n, pid in enumerate(self.kms_workers(), start=1):
            roles[f"kms-sim worker {n}"] = pid
        for pid in self.kms_helpers():
            roles["kms-sim resource tracker"] = pid
        for i, nsm in enumerate(self.nsms):
            roles[f"nsm-sim {i}"] = nsm.process.pid
        return roles

    # -- crashes: kill -9, then the same command again ------------------------------------------------------

    def crash_kms(self) -> str:
        old = tuple(self.kms_workers())
        self.kms.process.signal_group(signal.SIGKILL)
        self.kms.restart(self.group)
        self.wait_workers(exclude=old)
        workers = len(old)
        return f"kill -9 of kms-sim's process group (supervisor + {workers} workers), restarted on its port"

    def crash_kms_worker(self) -> str:
        workers = self.kms_workers()
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        self.wait_workers(exclude=(victim,))
        return f"kill -9 of one kms-sim worker (pid {victim}); its supervisor started another"

    def crash_proxy(self) -> str:
        self.proxy.process.signal_group(signal.SIGKILL)
        self.proxy.process = self.group.restart(
            self.proxy.process, ready=OutputLine(pattern="listening state")
        )
        return "kill -9 of vsock-proxy, restarted on the same vsock port (its stale socket left as it was)"

    def crash_nsm(self, index: int) -> str:
        nsm = self.nsms[index]
        nsm.process.signal_group(signal.SIGKILL)
        nsm.process = self.group.restart(nsm.process, ready=OutputLine(pattern="listening"))
        return f"kill -9 of client {index}'s nsm-sim, restarted on the same socket"

    def stop_kms(self) -> None:
        """Stop kms-sim (SIGTERM), so its files can be read as they rest."""
        self.group.stop(self.kms.process)

    def stop(self) -> None:
        self.group.stop_all()
