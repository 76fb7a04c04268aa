"""The enclave clients (:mod:`stress.worker` processes) and the rounds that drive them.

A round asks every client with calls left for ``batch`` more and reads each outcome as it comes (one line
per call), so the orchestrator knows at any moment how far the round is and can strike mid-request
(:meth:`Load.round`'s ``strike``). A client killed mid-round has its in-flight call counted as
*abandoned* (it died with it); it is started again after the round with a new key pair and the same
nsm-sim, and makes the calls it has left. Every wait is bounded: a client that prints nothing for
:data:`CALL_TIMEOUT_S` is *hung* (an unexpected failure) and is stopped and started again.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nitro_sim.procs import Process, ProcessError
from stress.stack import Stack

__all__ = ["CALL_TIMEOUT_S", "Client", "Load"]

#: Longest silence of a client within a round: more than the SDK's slowest honest call here (three
#: attempts, each refused at once while a service restarts, plus back-off), far less than its timeouts.
CALL_TIMEOUT_S = 120.0
#: Bound on a client's start (interpreter, SDK import, RSA key generation) on a loaded machine.
START_TIMEOUT_S = 60.0


@dataclass(slots=True)
class Client:
    """One enclave client: its process (each incarnation a new key pair) and what its calls gave."""

    index: int
    target: int
    proc: Process
    pid: int = 0
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)  # PKCS#8 DER of each incarnation's private key
    abandoned: int = 0
    incarnations: int = 1
    dead: bool = False
    busy: bool = False  # in the middle of a round's calls

    @property
    def remaining(self) -> int:
        return self.target - len(self.outcomes) - self.abandoned

    def answered(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if "ok" in o]

    def failed(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if "err" in o]


def _line(proc: Process, timeout: float) -> dict[str, Any]:
    obj = json.loads(proc.read_line(timeout))
    if not isinstance(obj, dict):
        raise ProcessError(f"{proc.name} wrote {obj!r}")
    if "error" in obj:
        raise ProcessError(f"{proc.name}: {obj['error']}")
    return obj


class Load:
    """The clients of one run."""

    def __init__(self, stack: Stack, *, clients: int, requests: int, n_bytes: int) -> None:
        self.stack = stack
        self.n_bytes = n_bytes
        self.clients: list[Client] = []
        for index in range(clients):
            proc = self._spawn(index)
            self.clients.append(Client(index=index, target=requests, proc=proc))
        for client in self.clients:
            self._greet(client)
        self.progress = 0
        self._lock = threading.Lock()

    def _spawn(self, index: int) -> Process:
        argv = [sys.executable, "-m", "stress.worker", "--bytes", str(self.n_bytes)]
        return self.stack.group.spawn(
            argv, name=f"client-{index}", env=self.stack.client_env(index), talk=True
        )

    def _greet(self, client: Client) -> None:
        """Read the ready line, then the incarnation's private key (for the leak scan)."""
        client.pid = int(_line(client.proc, START_TIMEOUT_S)["pid"])
        client.proc.send("secrets")
        client.keys.append(bytes.fromhex(str(_line(client.proc, START_TIMEOUT_S)["key"])))
        client.dead = False

    def restart(self, client: Client) -> None:
        """The client's process again (same command, new key pair), if it died or hung."""
        client.proc = self.stack.group.restart(client.proc)
        client.incarnations += 1
        self._greet(client)

    def kill(self, client: Client) -> None:
        """``kill -9`` of a client: a busy client's reader sees its output end (the call in flight is
        abandoned); it is started again after the round."""
        client.dead = True
        client.proc.signal_group(signal.SIGKILL)

    def busy(self) -> list[Client]:
        """The clients in the middle of this round's calls."""
        return [c for c in self.clients if c.busy]

    @property
    def remaining(self) -> int:
        return sum(max(0, c.remaining) for c in self.clients)

    def round(self, batch: int, *, strike: Callable[[], None] | None = None, at: float = 1 / 3) -> int:
        """Every client makes up to ``batch`` more calls; ``strike`` runs once ``at`` of them are done.

        Returns the calls the round asked for. Clients that died are started again afterwards.
        """
        asked = {c.index: min(batch, c.remaining) for c in self.clients if c.remaining > 0}
        total = sum(asked.values())
        with self._lock:
            self.progress = 0
        threads = [
            threading.Thread(target=self._drive, args=(self.clients[i], k), name=f"drive-{i}", daemon=True)
            for i, k in asked.items()
        ]
        for thread in threads:
            thread.start()
        if strike is not None:
            while self.progress < total * at and any(t.is_alive() for t in threads):
                time.sleep(0.005)
            strike()
        for thread in threads:
            thread.join(CALL_TIMEOUT_S * (batch + 1))
        for client in self.clients:
            if client.dead:
                self.restart(client)
        return total

    def _drive(self, client: Client, count: int) -> None:
        client.busy = True
        try:
            client.proc.send(f"run {count}")
            while True:
                line = _line(client.proc, CALL_TIMEOUT_S)
                if "done" in line:
                    return
                client.outcomes.append(line)
                with self._lock:
                    self.progress += 1
        except ProcessError as error:
            client.dead = True
            if client.proc.running():  # silent for too long: hung, an unexpected failure of that call
                message = str(error).splitlines()[0]
                client.outcomes.append({"err": "Hung", "code": None, "msg": message, "t0": 0, "t1": 0})
                client.proc.stop()
            else:  # killed mid-request: that call died with it
                client.abandoned += 1
        except (ValueError, OSError):  # its pipes closed under it: the run is being stopped (Ctrl-C)
            client.dead = True
        finally:
            client.busy = False

    def command_all(self, command: str, reply: str) -> None:
        """Send ``command`` to every client and read each one's ``reply`` line."""
        for client in self.clients:
            client.proc.send(command)
        for client in self.clients:
            line = _line(client.proc, START_TIMEOUT_S)
            if reply not in line:
                raise ProcessError(f"client {client.index} answered {command!r} with {line}")

    def quit(self) -> None:
        for client in self.clients:
            try:
                client.proc.send("quit")
            except ProcessError:
                continue
        for client in self.clients:
            client.proc.wait_exit(10.0)
            self.stack.group.stop(client.proc)
