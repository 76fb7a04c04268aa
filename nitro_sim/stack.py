"""The simulated attested stack as objects: kms-sim, the parent's vsock-proxy, NSM devices, the SDK client.

All of it lives in one ``NITRO_SIM_HOME`` (a short path: Unix socket paths fit in 107 bytes) and talks over
Unix sockets and ``127.0.0.1`` only; every process is started, awaited and stopped by :mod:`nitro_sim.procs`.

- :class:`KmsSim` (:mod:`nitro_sim._kms_sim`): ``kms-sim serve --listen 127.0.0.1:PORT --reload-interval 0``,
  PORT 0 (a free one) or one held for it (:func:`reserve_port`) so the proxy can start beside it
  (:meth:`KmsSim.restart`: again on the port it had). Its policy and faults files
  (``kms/policy.json``, ``kms/faults.json``) are replaced by an atomic rename with a strictly increasing
  mtime, so their (inode, size, mtime) stamp always changes and, with a reload interval of 0, the next
  request sees the new file (kms/reload.py): :meth:`KmsSim.set_policy` and :meth:`KmsSim.inject_fault` are in
  force when they return, without waiting. A policy is checked with kms-sim's own parser first, so one
  kms-sim would refuse (and keep the old one) fails here, in the caller.
- Audit records: kms-sim writes a request's record before it sends the answer (kms/service.py), so after a
  call returns, :meth:`KmsSim.audit` finds its record.
- :class:`VsockProxy`: ``vsock-proxy 8000 127.0.0.1 PORT --config <allowlist>``, vsock ``(3, 8000)`` to
  kms-sim (or to another port of 127.0.0.1).
- :class:`Nsm`: ``nsm-sim --socket <home>/nsm/<n>.sock --module-id ID [--pcr N=HEX] [--debug-mode]``. Its
  PCRs are computed here by the same :class:`attestation.nsm.NSM`, so a caller can write a policy on them.
- :func:`enclave_kms`: the SDK's KMS client over that proxy and NSM. The SDK's vsock transport finds the
  proxy's socket through ``NITRO_SIM_HOME`` in ``os.environ``; it must name the stack's home.
  :func:`new_enclave_kms` makes one before any of it is ready (it connects on its first call), given
  kms-sim's credentials, which :meth:`KmsSim.spawn` writes into the home before kms-sim starts.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attestation.nsm import BOOT_LOCKED_PCRS, NSM, PCR_BYTES
from attestation.pki import SimulatedPKI, new_module_id
from attestation.sim import ENV_CID, ENV_HOME, ENV_NSM, PARENT_CID, sim_home, vsock_socket_path
from kms.state import DEFAULT_REGION
from nitro_sim._kms_sim import MAX_AUDIT_BYTES, Credentials, KmsSim, image_policy
from nitro_sim._programs import child_environment, program
from nitro_sim.procs import OutputLine, Process, ProcessGroup

__all__ = [
    "ENV_KMS_TLS",
    "FIRST_NSM_CID",
    "MAX_AUDIT_BYTES",
    "PROXY_PORT",
    "Credentials",
    "KmsSim",
    "Nsm",
    "VsockProxy",
    "child_environment",
    "enclave_kms",
    "image_policy",
    "new_enclave_kms",
    "program",
    "reserve_port",
    "start_all",
]

#: The parent's vsock port for KMS, as kmstool-enclave-cli's and the real vsock-proxy service's default.
PROXY_PORT = 8000
#: CIDs of the stack's simulated enclaves (above nitro-cli's automatic CIDs, which start at 16).
FIRST_NSM_CID = 1000
#: The SDK's switch between TLS and plain HTTP to kms-sim (enclave/kms.py); our kms-sim serves plain HTTP.
ENV_KMS_TLS = "NITRO_SIM_KMS_TLS"


class VsockProxy:
    """The parent's ``vsock-proxy``: vsock ``(3, port)`` to kms-sim, with an allowlist of just that."""

    def __init__(self, process: Process, home: Path, *, port: int, remote_port: int) -> None:
        self.process = process
        self.home = home
        self.port = port
        self.remote = ("127.0.0.1", remote_port)

    @classmethod
    def spawn(
        cls,
        group: ProcessGroup,
        home: Path,
        kms: KmsSim | int,
        *,
        port: int = PROXY_PORT,
        workers: int | None = None,
    ) -> VsockProxy:
        """Start the proxy to ``kms`` (or to that port of 127.0.0.1, e.g. a test's recording relay);
        ``workers``: its ``-w`` (connections at once)."""
        remote = kms if isinstance(kms, int) else kms.port
        allowlist = home / f"vsock-proxy-{port}.yaml"
        allowlist.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {remote}}}\n", encoding="utf-8")
        argv = [*program("vsock-proxy"), str(port), "127.0.0.1", str(remote), "--config", str(allowlist)]
        argv += ["-w", str(workers)] if workers is not None else []
        return cls(group.spawn(argv, name="vsock-proxy"), home, port=port, remote_port=remote)

    def wait_ready(self) -> VsockProxy:
        self.process.wait_ready(OutputLine(pattern="listening state"))
        return self

    @property
    def socket(self) -> Path:
        """The Unix socket that stands for vsock ``(3, port)`` in this home."""
        return vsock_socket_path(PARENT_CID, self.port, self.home)


def _pcr_values(pcrs: Mapping[int, bytes | str]) -> dict[int, bytes]:
    """Boot PCR values as bytes; ValueError (one line) for an index or value nsm-sim would refuse."""
    out: dict[int, bytes] = {}
    for index, value in pcrs.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < BOOT_LOCKED_PCRS:
            raise ValueError(f"PCR index must be a boot PCR in 0..{BOOT_LOCKED_PCRS - 1}, got {index!r}")
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
        except (ValueError, TypeError):
            raise ValueError(f"PCR{index}: value is not hexadecimal") from None
        if len(raw) != PCR_BYTES:
            raise ValueError(f"PCR{index}: value must be {PCR_BYTES} bytes ({2 * PCR_BYTES} hex digits)")
        out[index] = raw
    return out


class Nsm:
    """A running ``nsm-sim``: one simulated enclave's NSM device, with the PCRs it was given."""

    def __init__(
        self, process: Process, home: Path, *, socket: Path, cid: int, pcrs: dict[int, bytes], debug: bool
    ) -> None:
        self.process = process
        self.home = home
        self.socket = socket
        self.cid = cid
        #: The boot PCRs 0..15 the device reports (the given ones, the defaults, zeros in debug mode).
        self.pcrs = pcrs
        self.debug = debug

    @classmethod
    def spawn(
        cls,
        group: ProcessGroup,
        home: Path,
        *,
        cid: int,
        pcrs: Mapping[int, bytes | str] | None = None,
        debug: bool = False,
        name: str | None = None,
    ) -> Nsm:
        values = _pcr_values(pcrs or {})
        now = datetime.now(UTC)
        pki = SimulatedPKI.load_or_create(home, at=now)
        module_id = new_module_id(pki.instance_id, at=now)
        device = NSM(pki=pki, module_id=module_id, pcrs=values or None, debug=debug)
        boot = {i: device.describe_pcr(i).data for i in range(BOOT_LOCKED_PCRS)}
        socket = home / "nsm" / f"{name or cid}.sock"
        argv = [*program("nsm-sim"), "--socket", str(socket), "--module-id", module_id]
        argv += [f"--pcr={index}={value.hex()}" for index, value in sorted(values.items())]
        argv += ["--debug-mode"] if debug else []
        socket.parent.mkdir(mode=0o700, exist_ok=True)
        process = group.spawn(argv, name=f"nsm-sim-{name or cid}")
        return cls(process, home, socket=socket, cid=cid, pcrs=boot, debug=debug)

    def wait_ready(self) -> Nsm:
        self.process.wait_ready(OutputLine(pattern="listening"))
        return self

    @property
    def environ(self) -> dict[str, str]:
        """What makes a process this simulated enclave's app: NITRO_SIM_HOME, NITRO_SIM_NSM, NITRO_SIM_CID."""
        return {ENV_HOME: str(self.home), ENV_NSM: str(self.socket), ENV_CID: str(self.cid)}


def new_enclave_kms(
    credentials: Credentials, nsm: Nsm, *, proxy_port: int = PROXY_PORT, **client_args: Any
) -> tuple[Any, Callable[[], None]]:
    """The SDK's ``enclave.client("kms")`` over vsock ``(3, proxy_port)`` and ``nsm``, with ``credentials``,
    and what closes it (the client and its NSM connection). Nothing is connected yet (the SDK connects on
    the first call), so it can be made, RSA key pair and all, while the stack is still starting.
    """
    import enclave  # noqa: PLC0415 - the SDK is only needed here
    from enclave.nsm import NSMClient, SimulatedDeviceTransport  # noqa: PLC0415

    device = NSMClient(SimulatedDeviceTransport(nsm.socket))
    environ = {**nsm.environ, ENV_KMS_TLS: "0"}
    client_args.setdefault("region_name", DEFAULT_REGION)
    client_args.setdefault("aws_access_key_id", credentials.access_key_id)
    client_args.setdefault("aws_secret_access_key", credentials.secret_access_key)
    try:
        client = enclave.client(
            "kms", proxy_port=proxy_port, use_ssl=False, nsm=device, environ=environ, **client_args
        )
    except BaseException:
        device.close()
        raise

    def close() -> None:
        try:
            client.close()
        finally:
            device.close()

    return client, close


@contextlib.contextmanager
def enclave_kms(kms: KmsSim, proxy: VsockProxy, nsm: Nsm, **client_args: Any) -> Iterator[Any]:
    """The SDK's ``enclave.client("kms")`` over ``proxy`` and ``nsm`` with kms-sim's credentials, then closed.

    ``os.environ["NITRO_SIM_HOME"]`` must name the stack's home (the SDK's vsock transport reads it there).
    """
    if sim_home().absolute() != nsm.home.absolute():
        raise RuntimeError(
            f"set {ENV_HOME}={nsm.home} in os.environ first (the SDK finds vsock sockets there)"
        )
    client, close = new_enclave_kms(kms.credentials, nsm, proxy_port=proxy.port, **client_args)
    try:
        yield client
    finally:
        close()


def reserve_port() -> socket.socket | None:
    """A free TCP port of 127.0.0.1 held for kms-sim, so the proxy can be started towards it before kms-sim
    listens; None off Linux. Close the socket once kms-sim is ready (``getsockname()[1]`` is the port).

    The socket is bound with SO_REUSEADDR and does not listen. While it is open, Linux gives the port to no
    one who lets the kernel choose (bind to port 0, connect's ephemeral ports skip bound ports), and
    kms-sim, which binds with SO_REUSEADDR too, can still take it: two such binds conflict only when the
    first socket listens (``inet_csk_bind_conflict``).
    """
    if not sys.platform.startswith("linux"):
        return None
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 0))
    except OSError:
        held.close()
        raise
    return held


def start_all(
    group: ProcessGroup,
    home: Path,
    *,
    cid: int,
    pcrs: Mapping[int, bytes | str] | None = None,
    debug: bool = False,
    policy: Path | None = None,
    reload: str = "0",
) -> tuple[KmsSim, VsockProxy, Nsm]:
    """kms-sim, nsm-sim and the proxy started together (on Linux: the proxy towards a port held for
    kms-sim, :func:`reserve_port`; elsewhere the proxy once kms-sim's port is known), all three ready."""
    SimulatedPKI.load_or_create(home, at=datetime.now(UTC))  # once, before two programs want it
    held = reserve_port()
    try:
        port = held.getsockname()[1] if held is not None else 0
        kms = KmsSim.spawn(group, home, policy=policy, reload=reload, port=port)
        nsm = Nsm.spawn(group, home, cid=cid, pcrs=pcrs, debug=debug)
        proxy = VsockProxy.spawn(group, home, port) if port else None
        kms.wait_ready()
    finally:
        if held is not None:
            held.close()
    proxy = (proxy or VsockProxy.spawn(group, home, kms)).wait_ready()
    return kms, proxy, nsm.wait_ready()
