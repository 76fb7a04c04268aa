"""What one fixture scope owns (:class:`Stack`) and what the session shares (:class:`Runtime`); the rules
are :mod:`nitro_sim.pytest_plugin`'s.

The stack's modules (kms, attestation, cryptography) are imported when a scope first needs them: the plugin,
and so this module, loads in every pytest run.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nitro_sim.procs import ProcessError, ProcessGroup

if TYPE_CHECKING:
    from nitro_sim._reaper import Reaper
    from nitro_sim._zygote import Zygote
    from nitro_sim.enclaves import Enclave
    from nitro_sim.stack import KmsSim, Nsm, VsockProxy

__all__ = ["BOOT_LOCKED_PCRS", "MAX_POOLED_NSMS", "PCR_BYTES", "ClientMaker", "Runtime", "Stack"]

#: Distinct (PCRs, debug) NSM devices kept running per scope; the least recently used one is stopped.
MAX_POOLED_NSMS = 8
#: nsm-api: PCRs 0-15 are the boot PCRs (locked), 16-31 the enclave's own; each 48 bytes (SHA-384).
BOOT_LOCKED_PCRS = 16
MAX_PCRS = 32
PCR_BYTES = 48
_ZERO_PCR = bytes(PCR_BYTES)


class Runtime:
    """What the session shares: the zygote that forks the stacks' programs, the reaper that stops them."""

    def __init__(self) -> None:
        from nitro_sim._reaper import Reaper  # noqa: PLC0415 - see the module docstring
        from nitro_sim._zygote import Zygote, supported  # noqa: PLC0415
        from nitro_sim.stack import child_environment  # noqa: PLC0415

        self.directory = Path(tempfile.mkdtemp(prefix="nitro-sim-session-"))
        self.reaper: Reaper = Reaper()
        self.zygote: Zygote | None = None
        if supported():  # started by its first fork, from this (the main) thread
            self.zygote = Zygote(self.directory, env=child_environment(self.directory))

    def close(self) -> None:
        try:
            self.reaper.close()
        finally:
            if self.zygote is not None:
                self.zygote.close()
            shutil.rmtree(self.directory, ignore_errors=True)


class Stack:
    """What one scope owns: the home, its processes and, once asked for, kms-sim, the proxy and NSMs.

    Programs are spawned first and awaited when a fixture needs them, so :meth:`prestart` lets kms-sim, an
    NSM device and the proxy start together: the proxy towards a port held for kms-sim until it listens
    (:func:`nitro_sim.stack.reserve_port`; without one, the proxy waits for kms-sim's port).
    """

    def __init__(self, home: Path, runtime: Runtime) -> None:
        from nitro_sim.stack import child_environment  # noqa: PLC0415 - see the module docstring

        self.home = home
        self.runtime = runtime
        self.group = ProcessGroup(home / "logs", env=child_environment(home), zygote=runtime.zygote)
        self.kms: KmsSim | None = None
        self.proxy: VsockProxy | None = None
        self.nsms: OrderedDict[_NsmKey, Nsm] = OrderedDict()
        self.enclaves: list[Enclave] = []  # started by running_enclave, not terminated yet
        self._pending: set[object] = set()  # spawned, not yet awaited: kms-sim, the proxy, NSM devices
        self._held: socket.socket | None = None  # kms-sim's port until it listens
        self._spawned = 0

    def prestart(self, pcrs: dict[int, bytes], debug: bool) -> tuple[KmsSim, Nsm]:
        """Spawn kms-sim (with the proxy) and the NSM device for (``pcrs``, ``debug``), those not running."""
        return self._spawn_kms(with_proxy=True), self._spawn_nsm(pcrs, debug)

    def kms_sim(self) -> KmsSim:
        kms = self._spawn_kms()
        if kms in self._pending:
            self._pending.discard(kms)
            try:
                kms.wait_ready()
            except ProcessError:
                self.kms = None  # the next test tries again (and says why again)
                if self.proxy is not None and self.proxy in self._pending:  # towards the port it did not take
                    self._pending.discard(self.proxy)
                    self.group.stop(self.proxy.process)
                    self.proxy = None
                raise
            finally:
                self._release_port()
        return kms

    def vsock_proxy(self) -> VsockProxy:
        from nitro_sim.stack import VsockProxy  # noqa: PLC0415 - see the module docstring

        kms = self.kms_sim()
        if self.proxy is None:
            self.proxy = VsockProxy.spawn(self.group, self.home, kms)
            self._pending.add(self.proxy)
        proxy = self.proxy
        if proxy in self._pending:
            self._pending.discard(proxy)
            try:
                proxy.wait_ready()
            except ProcessError:
                self.proxy = None  # the next test tries again
                raise
        return proxy

    def nsm(self, pcrs: dict[int, bytes], debug: bool) -> Nsm:
        device = self._spawn_nsm(pcrs, debug)
        if device in self._pending:
            self._pending.discard(device)
            try:
                device.wait_ready()
            except ProcessError:
                self.nsms.pop(_key(pcrs, debug), None)
                raise
        return device

    def _spawn_kms(self, *, with_proxy: bool = False) -> KmsSim:
        """kms-sim, spawned if there is none; ``with_proxy``: the proxy too, if there is none."""
        from nitro_sim.stack import KmsSim, VsockProxy, reserve_port  # noqa: PLC0415 - see the module docstring

        if self.kms is None:
            self._held = reserve_port() if with_proxy and self.proxy is None else None
            port = self._held.getsockname()[1] if self._held is not None else 0
            try:
                self.kms = KmsSim.spawn(self.group, self.home, port=port)
                self._pending.add(self.kms)
                if port:
                    self.proxy = VsockProxy.spawn(self.group, self.home, port)
                    self._pending.add(self.proxy)
            except BaseException:
                self._release_port()
                raise
        return self.kms

    def _release_port(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def _spawn_nsm(self, pcrs: dict[int, bytes], debug: bool) -> Nsm:
        """The pooled device for the key (restarted if a test spoiled it), spawned if there is none."""
        from nitro_sim.stack import FIRST_NSM_CID, Nsm  # noqa: PLC0415 - see the module docstring

        key = _key(pcrs, debug)
        device = self.nsms.pop(key, None)
        if device is not None and device not in self._pending and not _pristine(device):
            self.group.stop(device.process)
            device = None
        if device is None:
            if len(self.nsms) >= MAX_POOLED_NSMS:
                _, oldest = self.nsms.popitem(last=False)
                self._pending.discard(oldest)
                self.group.stop(oldest.process)
            cid = FIRST_NSM_CID + self._spawned
            self._spawned += 1
            device = Nsm.spawn(self.group, self.home, cid=cid, pcrs=pcrs, debug=debug)
            self._pending.add(device)
        self.nsms[key] = device
        return device

    def run_enclave(self, eif: Path, **options: Any) -> Enclave:
        from nitro_sim.enclaves import run_enclave  # noqa: PLC0415 - see the module docstring

        enclave = run_enclave(eif, env=self.group.env, **options)
        self.enclaves.append(enclave)
        return enclave

    def terminate(self, enclave: Enclave) -> None:
        from nitro_sim.enclaves import terminate_enclave  # noqa: PLC0415 - see the module docstring

        if enclave in self.enclaves:
            self.enclaves.remove(enclave)
            terminate_enclave(enclave, env=self.group.env)

    def close(self) -> None:
        """Enclaves terminated; the processes get SIGTERM and go to the reaper, which removes the home."""
        self._release_port()
        try:
            for enclave in reversed(self.enclaves):  # a test's teardown did not get to them
                self.terminate(enclave)
        finally:
            processes, self.group.processes = list(self.group.processes), []
            home = self.home
            self.runtime.reaper.stop_later(
                reversed(processes), then=lambda: shutil.rmtree(home, ignore_errors=True)
            )


_NsmKey = tuple[tuple[tuple[int, bytes], ...], bool]


def _key(pcrs: dict[int, bytes], debug: bool) -> _NsmKey:
    return (tuple(sorted(pcrs.items())), debug)


def _pristine(device: Nsm) -> bool:
    """Whether no test has extended or locked the device's PCRs 16-31 (asked over its socket)."""
    from enclave.nsm import NSMClient, SimulatedDeviceTransport  # noqa: PLC0415 - only when reusing

    if not device.process.running():
        return False
    with NSMClient(SimulatedDeviceTransport(device.socket)) as client:
        for index in range(BOOT_LOCKED_PCRS, MAX_PCRS):
            described = client.describe_pcr(index)
            if described.lock or described.data != _ZERO_PCR:
                return False
    return True


class ClientMaker:
    """``nitro_sim.stack.new_enclave_kms`` in a thread while the stack starts: the RSA key pair it makes
    (~20-30 ms) is most of its cost, and cryptography makes it without holding the GIL. The client
    connects only on its first call, so it needs nothing ready (kms-sim's credentials are in the home from
    its spawn on). A failure is raised by :meth:`client`, so a kms-sim that cannot start is reported first,
    by the ``kms_sim`` fixture, with its own words."""

    def __init__(self, kms: KmsSim, device: Nsm) -> None:
        self.device = device
        self._made: tuple[Any, Callable[[], None]] | None = None
        self._error: Exception | None = None
        self._thread = threading.Thread(
            target=self._make, args=(kms, device), name="nitro-sim-enclave-kms", daemon=True
        )
        self._thread.start()

    def _make(self, kms: KmsSim, device: Nsm) -> None:
        from nitro_sim.stack import new_enclave_kms  # noqa: PLC0415 - see the module docstring

        try:
            self._made = new_enclave_kms(kms.credentials, device)
        except Exception as error:  # raised in the test's thread by client()
            self._error = error

    def client(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._made is None:
            raise RuntimeError("enclave_kms: the client was not made")
        return self._made[0]

    def close(self) -> None:
        self._thread.join()
        if self._made is not None:
            self._made[1]()
