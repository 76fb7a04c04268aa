"""kms-sim as an object: its URL and credentials, and state changes in force for the next request.

The rules are :mod:`nitro_sim.stack`'s (policy and faults files replaced atomically with a strictly later
mtime; audit records read from the mark).

Keys and aliases (``kms/keys.db``): :meth:`KmsSim.wait_ready` keeps a connection of its own and a snapshot
of every key and alias as they are once kms-sim is ready (in a fresh home: none), and :meth:`KmsSim.reset`
puts them back, in one transaction, only if another connection (a kms-sim worker) committed a change since
the last reset (SQLite's ``data_version``: one read, no query). A worker drops the key rows it keeps when its
own ``data_version`` moves, so the next request sees the restored keys.

Custom key stores (``kms/keystores.db``) the same way: a snapshot at :meth:`KmsSim.wait_ready`, put back by
:meth:`KmsSim.reset` only if a worker committed a change since (workers keep no key-store rows).
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kms.iam import parse_policies
from kms.keys import KeyRing, KeyRingSnapshot
from kms.keystores import KeyStores, KeyStoresSnapshot
from kms.server import MAX_FAULT_COUNT
from kms.service import INJECTABLE_FAULTS
from kms.state import DEFAULT_PROFILE, DEFAULT_REGION, KMSHome, ensure_home
from nitro_sim._programs import program
from nitro_sim.procs import OutputLine, Process, ProcessGroup

__all__ = ["MAX_AUDIT_BYTES", "Credentials", "KmsSim", "image_policy"]

#: Most bytes of audit log one :meth:`KmsSim.audit` reads (a record is ~1-3 KB).
MAX_AUDIT_BYTES = 16 * 1024 * 1024
#: kms-sim's first line once it listens: its URL.
_URL_LINE = r"^https?://"


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
        self._keys: KeyRing | None = None  # this object's connection to keys.db, from wait_ready on
        self._initial_keys = KeyRingSnapshot(keys=(), aliases=())
        self._keys_version = 0
        self._stores: KeyStores | None = None  # this object's connection to keystores.db, likewise
        self._initial_stores = KeyStoresSnapshot(rows=())
        self._stores_version = 0

    @classmethod
    def spawn(
        cls,
        group: ProcessGroup,
        home: Path,
        *,
        policy: Path | None = None,
        reload: str = "0",
        port: int = 0,
        args: Sequence[str] = (),
    ) -> KmsSim:
        """Start kms-sim (then :meth:`wait_ready`) on ``127.0.0.1:port`` (0: a free one).

        ``policy``: a file to serve instead of the home's; ``args``: more ``kms-sim serve`` options
        (``--tls``, ``--fault NAME:COUNT``, ``--workers N``). The home's kms-sim state (credentials, config,
        policy: each only if missing) is created here first, as kms-sim would, so :attr:`credentials` can be
        read at once.
        """
        ensure_home(home)
        argv = [*program("kms-sim"), "serve", "--listen", f"127.0.0.1:{port}", "--reload-interval", reload]
        if policy is not None:
            argv += ["--policy", str(policy)]
        return cls(group.spawn([*argv, *args], name="kms-sim"), home, policy=policy)

    def wait_ready(self) -> KmsSim:
        self._url = self.process.wait_ready(OutputLine(pattern=_URL_LINE))
        self._initial_policy = self.policy_file.read_text(encoding="utf-8")
        self._audit_mark = self._audit_size()
        if self._keys is None:
            self._keys = KeyRing(self.state.keys)
            self._initial_keys = self._keys.snapshot()
            self._keys_version = self._keys.data_version()
        if self._stores is None:
            self._stores = KeyStores(self.state.keystores)
            self._initial_stores = self._stores.snapshot()
            self._stores_version = self._stores.data_version()
        return self

    def close(self) -> None:
        """Close this object's connections to keys.db and keystores.db (kms-sim itself is stopped by its
        process group)."""
        if self._keys is not None:
            self._keys.close()
            self._keys = None
        if self._stores is not None:
            self._stores.close()
            self._stores = None

    def restart(self, group: ProcessGroup) -> KmsSim:
        """Stop kms-sim and start it again with the same options on the same port (its clients' URL)."""
        argv = list(self.process.command.argv)
        argv[argv.index("--listen") + 1] = f"127.0.0.1:{self.port}"
        self.process = group.restart(self.process, argv=argv, ready=OutputLine(pattern=_URL_LINE))
        self._url = self.process.ready_line
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
        """Back to the state at start for the next test: policy, no faults, the keys, aliases and custom key
        stores there were when kms-sim became ready, audit mark at the end."""
        if self._policy_changed:
            self.set_policy(None)
        if self._faults_changed:
            self.clear_faults()
        self.reset_keys()
        self.reset_key_stores()
        self.mark_audit()

    def reset_keys(self) -> None:
        """Keys and aliases as they were when kms-sim became ready (see the module docstring); nothing to
        do, and nothing done, if no request changed them since the last reset."""
        if self._keys is None:
            raise RuntimeError("kms-sim is not ready yet: call wait_ready()")
        if self._keys.data_version() == self._keys_version:
            return
        self._keys.restore(self._initial_keys)
        self._keys_version = self._keys.data_version()

    def reset_key_stores(self) -> None:
        """Custom key stores as they were when kms-sim became ready (see the module docstring); nothing to
        do, and nothing done, if no request changed them since the last reset."""
        if self._stores is None:
            raise RuntimeError("kms-sim is not ready yet: call wait_ready()")
        if self._stores.data_version() == self._stores_version:
            return
        self._stores.restore(self._initial_stores)
        self._stores_version = self._stores.data_version()

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
