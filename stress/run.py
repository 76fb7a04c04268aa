"""One ``make stress`` run: the schedule (checks: :mod:`stress.checks`; report: :mod:`stress.report`).

A round asks every client for ``batch`` more calls; a fault strikes a third of the way into its round, so
calls are in flight when it does.

1. Start the stack and the clients; round 0 opens every connection.
2. Crashes under load, one a round, while the operator creates key stores: kill -9 of kms-sim (its process
   group), of one kms-sim worker, of vsock-proxy, of one nsm-sim, of one client mid-request. Each comes
   back by the same command line. Then a clean round.
3. A quiet point (every client closes its connection and the descriptor counts hold still), a warm round,
   a second quiet point: *first* sample of every service's descriptors, threads and RSS (the warm round
   lets the allocators settle at their high-water marks after the restarts, so growth from here is growth).
4. Steady phase: the hostile clients (idle, drip, flood) connect; the host hands client 0's
   CiphertextForRecipient to client 1 (the tap's swap); the audit log's disk is full for two rounds. The
   rounds left are spread over the hostile clients' lives, so the load runs while they hold connections.
5. Quiet point: *last* sample. Stop the clients, the tap and kms-sim; classify, reconcile, scan; stop all.

argv and environment of every process are read at each quiet point and after start-up, for the scan.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from nitro_sim.procs import ProcessError
from stress import checks, sampling
from stress.faults import TRANSPORT, Window, disk_full
from stress.hostile import Hostile
from stress.load import Client, Load
from stress.operator import Operator
from stress.outcome import Outcome, Settings
from stress.stack import Stack, StackSettings

__all__ = ["run"]

#: A quiet point: descriptor counts must hold still this long (connections closing), within the bound.
QUIET_S = 0.5
QUIET_TIMEOUT_S = 15.0
#: Rounds with the audit log's disk full.
DISK_FULL_ROUNDS = 2
#: Bound on the wait for the operator's last create after the crash phase.
OPERATOR_STOP_S = 60.0
#: Bound on the wait for the tap's report of the swap, and for its exit.
TAP_WAIT_S = 10.0


class _Run:
    def __init__(self, run_dir: Path, settings: Settings) -> None:
        self.s = settings
        self.out = Outcome(settings=settings)
        self.stack = Stack(
            run_dir,
            StackSettings(
                clients=settings.clients,
                kms_workers=settings.kms_workers,
                request_timeout_s=settings.request_timeout_s,
            ),
        )
        self.load: Load
        self.operator: Operator
        self.texts: list[bytes] = []
        self.messages: list[str] = []
        self.t0 = time.monotonic()
        self.swap_from = 0
        self.victim = 0  # the client the client crash killed

    def execute(self) -> Outcome:
        try:
            self.stack.start()
            self.load = Load(
                self.stack, clients=self.s.clients, requests=self.s.requests, n_bytes=self.s.n_bytes
            )
            self.collect_texts()
            self.phase("stack and clients up")
            self.load.round(self.s.batch)
            self.crashes()
            self.phase("crashes survived")
            self.quiet()
            self.load.round(self.s.batch)
            self.out.first = self.quiet()
            self.steady()
            self.phase("load done")
            self.out.last = self.quiet()
            self.finish()
            self.phase("checks done")
        finally:
            self.stack.stop()
        self.out.seconds = round(time.monotonic() - self.t0, 1)
        return self.out

    def phase(self, name: str) -> None:
        self.out.phases[name] = round(time.monotonic() - self.t0, 1)

    def collect_texts(self) -> None:
        pids = [*self.stack.services().values(), self.stack.tap.pid, *(c.proc.pid for c in self.load.clients)]
        self.texts.extend(sampling.process_text(pid) for pid in pids)

    def quiet(self) -> dict[str, sampling.Usage]:
        """Every client's connection closed, descriptor counts still: a sample of every service."""
        self.load.command_all("close", "closed")

        def counts() -> tuple[int, ...]:
            return tuple(u.fds if (u := sampling.usage(p)) else -1 for p in self.stack.services().values())

        before = counts()
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        while time.monotonic() < deadline:
            time.sleep(QUIET_S)
            now = counts()
            if now == before:
                break
            before = now
        self.collect_texts()
        return {role: u for role, pid in self.stack.services().items() if (u := sampling.usage(pid))}

    # -- crashes ---------------------------------------------------------------------------------------------

    def strike(
        self,
        name: str,
        action: Callable[[], str],
        errors: frozenset[str],
        clients: frozenset[int] | None = None,
    ) -> Callable[[], None]:
        """The fault ``action`` as a round's strike: its window (start to service back) and its note.

        ``clients``: the clients it hits (None: all); the client crash's victim is chosen as it strikes.
        """

        def go() -> None:
            start = time.monotonic_ns()
            note = action()
            hit = frozenset({self.victim}) if name == "client crash" else clients
            window = Window(name=name, start_ns=start, end_ns=time.monotonic_ns(), errors=errors, clients=hit)
            self.out.windows.append(window)
            self.out.restarts.append(note)

        return go

    def crashes(self) -> None:
        n, batch = self.s.clients, self.s.batch
        nsm_victim, client_victim = 2 % n, 3 % n
        self.operator = Operator(kms=self.stack.kms, count=self.s.key_stores)
        self.operator.start()
        try:
            self.load.round(batch, strike=self.strike("kms-sim crash", self.stack.crash_kms, TRANSPORT))
            self.load.round(
                batch, strike=self.strike("kms-sim worker crash", self.stack.crash_kms_worker, TRANSPORT)
            )
            self.load.round(batch, strike=self.strike("vsock-proxy crash", self.stack.crash_proxy, TRANSPORT))
            device_errors = frozenset({"NSMDeviceError", "NSMError"})
            crash_nsm = self.strike(
                "nsm-sim crash",
                lambda: self.stack.crash_nsm(nsm_victim),
                device_errors,
                frozenset({nsm_victim}),
            )
            self.load.round(batch, strike=crash_nsm)

            def kill_client() -> str:
                busy = self.load.busy()
                victim = next((c for c in busy if c.index == client_victim), busy[0] if busy else None)
                victim = victim or self.load.clients[client_victim]
                state = "mid-request" if victim.busy else "between calls"
                self.victim = victim.index
                self.load.kill(victim)
                return f"kill -9 of client {victim.index} {state}; started again with a new key pair"

            self.load.round(batch, strike=self.strike("client crash", kill_client, frozenset()))
        finally:
            self.operator.stop(OPERATOR_STOP_S)
        self.load.round(batch)

    # -- the steady phase ------------------------------------------------------------------------------------

    def steady(self) -> None:
        hostile = Hostile(
            self.stack.client_socket,
            request_timeout=self.s.request_timeout_s,
            drip_interval=self.s.drip_interval_s,
            flood_bytes=self.s.flood_bytes,
        )
        life_end = hostile.started + self.s.request_timeout_s + 1.0
        giver, taker = self.load.clients[0], self.load.clients[1]
        self.arm_swap(giver, taker)
        self.steady_round(hostile)
        self.check_swap(taker)
        audit = self.stack.kms.state.audit
        start = time.monotonic_ns()
        with disk_full(self.stack.kms_workers(), audit.stat().st_size):
            for _ in range(DISK_FULL_ROUNDS):
                self.steady_round(hostile)
        self.out.windows.append(
            Window(name="disk full", start_ns=start, end_ns=time.monotonic_ns(), errors=frozenset())
        )
        while self.load.remaining:
            started = time.monotonic()
            self.steady_round(hostile)
            rounds_left = math.ceil(self.load.remaining / (self.s.batch * self.s.clients))
            if rounds_left and hostile.alive():  # spread the rest over the hostile clients' lives
                time.sleep(max(0.0, (life_end - started) / (rounds_left + 1) - (time.monotonic() - started)))
        self.out.hostile = hostile.join()

    def steady_round(self, hostile: Hostile) -> None:
        alive = hostile.alive()
        calls = self.load.round(self.s.batch)
        if alive and hostile.alive():
            self.out.hostile_overlap_calls += calls

    def arm_swap(self, giver: Client, taker: Client) -> None:
        """Ask the tap for ``giver``'s last answer and arm it for ``taker``'s next one."""
        tap = self.stack.tap
        tap.send(f"last {giver.pid}")
        last = json.loads(tap.read_line(TAP_WAIT_S))
        acknowledged = {o["id"] for o in giver.answered()}
        self.out.swap = {
            "from_client": giver.index,
            "to_client": taker.index,
            "its_request_was_acknowledged_by_the_giver": last.get("id") in acknowledged,
        }
        if not last.get("blob"):
            self.out.errors.append(f"the tap saw no answer to client {giver.index} to hand over")
            return
        self.swap_from = time.monotonic_ns()
        tap.send(f"swap {taker.pid} {last['blob']}")
        json.loads(tap.read_line(TAP_WAIT_S))

    def check_swap(self, taker: Client) -> None:
        try:
            swapped = json.loads(self.stack.tap.read_line(TAP_WAIT_S))
        except ProcessError:
            swapped = {}
        failures = [o for o in taker.failed() if int(o["t0"]) >= self.swap_from]
        self.out.swap["swapped"] = "swapped" in swapped
        self.out.swap["decryption_errors"] = sum(1 for o in failures if o["err"] == "DecryptionError")
        window = Window(
            name="answer swapped by the host",
            start_ns=self.swap_from,
            end_ns=time.monotonic_ns(),
            errors=frozenset({"DecryptionError"}),
            clients=frozenset({taker.index}),
            limit=1,
        )
        self.out.windows.append(window)

    # -- after the load --------------------------------------------------------------------------------------

    def finish(self) -> None:
        self.load.quit()
        self.stack.tap.send("stats")
        stats = json.loads(self.stack.tap.read_line(TAP_WAIT_S))
        self.out.capture = {"relayed": int(stats["relayed"]), "captured": int(stats["captured"])}
        if stats["captured"] < stats["relayed"]:
            self.out.errors.append("the proxy capture is incomplete (over the tap's bound)")
        self.stack.tap.send("quit")
        self.stack.tap.wait_exit(TAP_WAIT_S)
        self.stack.stop_kms()
        clients = self.load.clients
        checks.tally(self.out, clients, self.operator, self.messages)
        checks.reconcile(self.out, self.stack, clients, self.operator)
        search = checks.needles(self.stack, clients, self.operator)
        checks.scan(self.out, self.stack, search, self.texts, self.messages)


def run(run_dir: Path, settings: Settings) -> Outcome:
    """One run in ``run_dir`` (a fresh, short directory: the home's Unix socket paths must fit)."""
    settings.check()
    return _Run(run_dir, settings).execute()
