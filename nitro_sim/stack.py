"""The simulated attested stack as objects: kms-sim, the parent's vsock-proxy, NSM devices, the SDK client.

All of it lives in one ``NITRO_SIM_HOME`` (a short path: Unix socket paths fit in 107 bytes) and talks over
Unix sockets and ``127.0.0.1`` only; every process is started, awaited and stopped by :mod:`nitro_sim.procs`.

- :class:`KmsSim`: ``kms-sim serve --listen 127.0.0.1:0 --reload-interval 0``. Its policy and faults files
  (``kms/policy.json``, ``kms/faults.json``) are replaced by an atomic rename with a strictly increasing
  mtime, so their (inode, size, mtime) stamp always changes and, with a reload interval of 0, the next
  request sees the new file (kms/reload.py): :meth:`KmsSim.set_policy` and :meth:`KmsSim.inject_fault` are in
  force when they return, without waiting. A policy is checked with kms-sim's own parser first, so one
  kms-sim would refuse (and keep the old one) fails here, in the caller.
- Audit records: kms-sim writes a request's record before it sends the answer (kms/service.py), so after a
  call returns, :meth:`KmsSim.audit` finds its record.
- :class:`VsockProxy`: ``vsock-proxy 8000 127.0.0.1 PORT --config <allowlist>``, vsock ``(3, 8000)`` to
  kms-sim.
- :class:`Nsm`: ``nsm-sim --socket <home>/nsm/<n>.sock --module-id ID [--pcr N=HEX] [--debug-mode]``. Its
  PCRs are computed here by the same :class:`attestation.nsm.NSM`, so a caller can write a policy on them.
- :func:`enclave_kms`: the SDK's KMS client over that proxy and NSM. The SDK's vsock transport finds the
  proxy's socket through ``NITRO_SIM_HOME`` in ``os.environ``; it must name the stack's home.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attestation.nsm import BOOT_LOCKED_PCRS, NSM, PCR_BYTES
from attestation.pki import SimulatedPKI, new_module_id
from attestation.sim import ENV_CID, ENV_HOME, ENV_NSM, PARENT_CID, sim_home, vsock_socket_path
from kms.iam import parse_policies
from kms.server import MAX_FAULT_COUNT
from kms.service import INJECTABLE_FAULTS
from kms.state import DEFAULT_PROFILE, DEFAULT_REGION, KMSHome
from nitro_sim.procs import OutputLine, Process, ProcessError, ProcessGroup

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
    "program",
    "start_all",
]

#: The parent's vsock port for KMS, as kmstool-enclave-cli's and the real vsock-proxy service's default.
PROXY_PORT = 8000
#: CIDs of the stack's simulated enclaves (above nitro-cli's automatic CIDs, which start at 16).
FIRST_NSM_CID = 1000
#: Most bytes of audit log one :meth:`KmsSim.audit` reads (a record is ~1-3 KB).
MAX_AUDIT_BYTES = 16 * 1024 * 1024
#: The SDK's switch between TLS and plain HTTP to kms-sim (enclave/kms.py); our kms-sim serves plain HTTP.
ENV_KMS_TLS = "NITRO_SIM_KMS_TLS"


def program(name: str) -> list[str]:
    """The argv prefix of one of our console scripts: beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found is None:
        raise ProcessError(f"{name} not found (beside {sys.executable} or on PATH): install attested-random")
    return [found]


def child_environment(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without AWS_* and NITRO_SIM_* settings, pointed at ``home``."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith(("AWS_", "NITRO_SIM_"))}
    env[ENV_HOME] = str(home)
    return env


def image_policy(pcr0: bytes | str, *, principal: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """A policy file allowing ``principal`` GenerateRandom only for an enclave whose PCR0 is ``pcr0``."""
    value = pcr0.hex() if isinstance(pcr0, bytes) else pcr0
    condition = {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": value}}
    statement = {"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*", "Condition": condition}
    return {principal: {"Version": "2012-10-17", "Statement": [statement]}}


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """kms-sim's principal: the home's shared-credentials file and its ``nitro-sim`` profile."""

    file: Path
    config_file: Path
    profile: str
    access_key_id: str
    secret_access_key: str = field(repr=False)

    @property
    def environ(self) -> dict[str, str]:
        """The variables that point AWS SDKs and the AWS CLI at these credentials (as ``kms-sim env``)."""
        return {
            "AWS_SHARED_CREDENTIALS_FILE": str(self.file),
            "AWS_CONFIG_FILE": str(self.config_file),
            "AWS_PROFILE": self.profile,
        }


class KmsSim:
    """A running ``kms-sim serve`` in ``home``; see the module docstring for how state changes apply."""

    def __init__(self, process: Process, home: Path, *, policy: Path | None = None) -> None:
        self.process = process
        self.home = home
        self.state = KMSHome(root=home / "kms")
        self.policy_file = policy or self.state.policy
        self._url: str | None = None
        self._initial_policy = ""
        self._mtimes: dict[Path, int] = {}
        self._policy_changed = False
        self._faults_changed = False
        self._audit_mark = 0

    @classmethod
    def spawn(
        cls, group: ProcessGroup, home: Path, *, policy: Path | None = None, reload: str = "0"
    ) -> KmsSim:
        """Start kms-sim (then :meth:`wait_ready`); ``policy``: a file to serve instead of the home's."""
        argv = [*program("kms-sim"), "serve", "--listen", "127.0.0.1:0", "--reload-interval", reload]
        if policy is not None:
            argv += ["--policy", str(policy)]
        return cls(group.spawn(argv, name="kms-sim"), home, policy=policy)

    def wait_ready(self) -> KmsSim:
        self._url = self.process.wait_ready(OutputLine(pattern=r"^https?://"))
        self._initial_policy = self.policy_file.read_text(encoding="utf-8")
        self._audit_mark = self._audit_size()
        return self

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("kms-sim is not ready yet: call wait_ready()")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].rstrip("/"))

    @property
    def credentials(self) -> Credentials:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.state.credentials, encoding="utf-8")
        section = parser[DEFAULT_PROFILE]
        return Credentials(
            file=self.state.credentials,
            config_file=self.state.config,
            profile=DEFAULT_PROFILE,
            access_key_id=section["aws_access_key_id"],
            secret_access_key=section["aws_secret_access_key"],
        )

    def boto3_client(self, **kwargs: Any) -> Any:
        """A boto3 KMS client for this kms-sim, independent of the caller's AWS_* settings (needs boto3)."""
        try:
            import boto3  # type: ignore[import-untyped]  # noqa: PLC0415 - optional, only needed here
            import botocore.session  # type: ignore[import-untyped]  # noqa: PLC0415
        except ModuleNotFoundError:
            raise ModuleNotFoundError("kms_sim.boto3_client() needs boto3: pip install boto3") from None
        creds = self.credentials
        core = botocore.session.Session()
        core.set_config_variable("credentials_file", str(creds.file))
        core.set_config_variable("config_file", str(creds.config_file))
        core.set_config_variable("profile", creds.profile)
        kwargs.setdefault("region_name", DEFAULT_REGION)
        kwargs.setdefault("aws_access_key_id", creds.access_key_id)
        kwargs.setdefault("aws_secret_access_key", creds.secret_access_key)
        return boto3.session.Session(botocore_session=core).client("kms", endpoint_url=self.url, **kwargs)

    # -- state changes, each in force for the next request ------------------------------------------------

    def set_policy(self, policy: Mapping[str, Any] | None) -> None:
        """Replace the policy file kms-sim serves (the home's, or the one given to :meth:`spawn`) with
        ``policy`` (``{principal: IAM policy}`` or one bare IAM policy); None: the file as it was at start.

        Raises kms-sim's PolicyFileError (one line) for a policy kms-sim would refuse.
        """
        if policy is None:
            text = self._initial_policy
        else:
            text = json.dumps(policy, indent=2) + "\n"
            parse_policies(json.loads(text), "set_policy()")
        self._replace(self.policy_file, text)
        self._policy_changed = policy is not None

    def inject_fault(self, name: str, count: int = 1) -> None:
        """Fail the next ``count`` requests with ``name`` (one of kms-sim's injectable errors); 0 clears."""
        if name not in INJECTABLE_FAULTS:
            raise ValueError(f"cannot inject {name!r}; choose from {', '.join(INJECTABLE_FAULTS)}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_FAULT_COUNT:
            raise ValueError(f"count must be an integer in 0..{MAX_FAULT_COUNT}, got {count!r}")
        self._replace(self.state.faults, json.dumps({name: count}) + "\n")
        self._faults_changed = True

    def clear_faults(self) -> None:
        self._replace(self.state.faults, json.dumps(dict.fromkeys(INJECTABLE_FAULTS, 0)) + "\n")
        self._faults_changed = False

    def mark_audit(self) -> None:
        """From now on, :meth:`audit` returns only records written after this call."""
        self._audit_mark = self._audit_size()

    def audit(self) -> list[dict[str, Any]]:
        """The audit records (parsed CloudTrail-shaped events) written since the mark, oldest first."""
        try:
            with self.state.audit.open("rb") as handle:
                handle.seek(self._audit_mark)
                data = handle.read(MAX_AUDIT_BYTES + 1)
        except FileNotFoundError:  # no request yet
            return []
        if len(data) > MAX_AUDIT_BYTES:
            raise ValueError(f"over {MAX_AUDIT_BYTES} bytes of audit records since the mark")
        complete = data[: data.rfind(b"\n") + 1]  # a record still being written is not one yet
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def reset(self) -> None:
        """Back to the state at start for the next test: policy, no faults, audit mark at the end."""
        if self._policy_changed:
            self.set_policy(None)
        if self._faults_changed:
            self.clear_faults()
        self.mark_audit()

    def _audit_size(self) -> int:
        try:
            return self.state.audit.stat().st_size
        except FileNotFoundError:
            return 0

    def _replace(self, path: Path, text: str) -> None:
        """Atomically replace ``path`` with a strictly later mtime than any version kms-sim has seen."""
        last = self._mtimes.get(path)
        if last is None:
            with contextlib.suppress(FileNotFoundError):
                last = path.stat().st_mtime_ns
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(text, encoding="utf-8")
        mtime = max(temp.stat().st_mtime_ns, (last or 0) + 1)
        os.utime(temp, ns=(mtime, mtime))
        os.replace(temp, path)
        self._mtimes[path] = mtime


class VsockProxy:
    """The parent's ``vsock-proxy``: vsock ``(3, port)`` to kms-sim, with an allowlist of just that."""

    def __init__(self, process: Process, home: Path, *, port: int, remote_port: int) -> None:
        self.process = process
        self.home = home
        self.port = port
        self.remote = ("127.0.0.1", remote_port)

    @classmethod
    def spawn(cls, group: ProcessGroup, home: Path, kms: KmsSim, *, port: int = PROXY_PORT) -> VsockProxy:
        allowlist = home / f"vsock-proxy-{port}.yaml"
        allowlist.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {kms.port}}}\n", encoding="utf-8")
        argv = [*program("vsock-proxy"), str(port), "127.0.0.1", str(kms.port), "--config", str(allowlist)]
        return cls(group.spawn(argv, name="vsock-proxy"), home, port=port, remote_port=kms.port)

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


@contextlib.contextmanager
def enclave_kms(kms: KmsSim, proxy: VsockProxy, nsm: Nsm, **client_args: Any) -> Iterator[Any]:
    """The SDK's ``enclave.client("kms")`` over ``proxy`` and ``nsm`` with kms-sim's credentials, then closed.

    ``os.environ["NITRO_SIM_HOME"]`` must name the stack's home (the SDK's vsock transport reads it there).
    """
    import enclave  # noqa: PLC0415 - the SDK is only needed here
    from enclave.nsm import NSMClient, SimulatedDeviceTransport  # noqa: PLC0415

    if sim_home().absolute() != nsm.home.absolute():
        raise RuntimeError(
            f"set {ENV_HOME}={nsm.home} in os.environ first (the SDK finds vsock sockets there)"
        )
    creds = kms.credentials
    device = NSMClient(SimulatedDeviceTransport(nsm.socket))
    environ = {**nsm.environ, ENV_KMS_TLS: "0"}
    client_args.setdefault("region_name", DEFAULT_REGION)
    client_args.setdefault("aws_access_key_id", creds.access_key_id)
    client_args.setdefault("aws_secret_access_key", creds.secret_access_key)
    try:
        client = enclave.client(
            "kms", proxy_port=proxy.port, use_ssl=False, nsm=device, environ=environ, **client_args
        )
    except BaseException:
        device.close()
        raise
    try:
        yield client
    finally:
        client.close()
        device.close()


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
    """kms-sim and nsm-sim started together, then the proxy once kms-sim's port is known."""
    SimulatedPKI.load_or_create(home, at=datetime.now(UTC))  # once, before two programs want it
    kms = KmsSim.spawn(group, home, policy=policy, reload=reload)
    nsm = Nsm.spawn(group, home, cid=cid, pcrs=pcrs, debug=debug)
    kms.wait_ready()
    proxy = VsockProxy.spawn(group, home, kms).wait_ready()
    return kms, proxy, nsm.wait_ready()
