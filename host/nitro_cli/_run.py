"""``nitro-cli run-enclave``: check, reserve, unpack, start the supervisor, wait for the heartbeat.

The real command has two halves: the CLI parses the arguments, then an "enclave process" does the rest
and reports back; a failure in that second half is printed as its own error, then the CLI prints
``Failed connections: 1`` and fails with E39 (``enclave_process_handle_all_replies``). Here the second
half raises :class:`EnclaveProcessError` and the CLI prints the same sequence. Its steps, in the real
order (``run_enclaves``, ``EnclaveHandle``), each with its error:

1. open the EIF (E19); check the CPU request against the pool (E23/E24 for the pool, E20/E21/E22);
2. memory at least 4x the EIF's size and not zero (E26); read and measure the EIF (E35); a signed EIF's
   PCR0 signature must verify with a certificate valid now (E59);
3. "Start allocating memory..."; under the records lock: hugepage memory from the pool (E27), the
   driver's minimum (E29), CPUs (E29 when in use), the CID (E29 when invalid or in use), the name
   (``_1``, ``_2`` suffixes); the enclave id is ``<instance id>-enc<16 hex>`` (:func:`new_module_id`:
   the start time in ms, then randomness), and the record is written STARTING;
4. unpack the application ramdisk and plan the launch (E35 for a bad ramdisk, E36 for a program that
   cannot run), start the supervisor (E05), print "Started enclave with ...", then wait for the
   heartbeat at most as long as the real ``calculate_necessary_timeout`` allows (E36 on failure, with
   the supervisor's one-line reason in the error log).

The simulated parent instance: ``$NITRO_SIM_INSTANCE_ID`` (default: the instance id of the simulated PKI
in the home, so the enclave id matches the certificate chain) and ``$NITRO_SIM_IAM_ROLE_ARN`` (default:
none). PCR4 is ``SHA384(48 zero bytes || instance id)``, PCR3 ``SHA384(48 zero bytes || role ARN)`` when a
role is set (else zeros); PCR0-2 come from the image, PCR8 from its signing certificate. In debug mode
PCR0-2 and PCR8 read as zeros.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from attestation.eif import MAX_EIF_BYTES, EifError, EifImage, decode_signature_section, read_eif
from attestation.eif_sign import certificate_valid_at, signature_matches
from attestation.nsm import extend
from attestation.pki import INSTANCE_ID_RE, SimulatedPKI, new_module_id
from host.nitro_cli import _procs, _records, _resources
from host.nitro_cli._launch import LaunchError, plan
from host.nitro_cli._records import Record
from host.nitro_cli._run_args import RunArgs, open_regular
from host.nitro_cli._supervisor import HEARTBEAT, LAUNCH_FILE, MAX_BOOT_MESSAGE
from host.nitro_cli._unpack import UnpackError, unpack
from host.nitro_cli.errors import NitroCliError, SimConfigError

ENV_INSTANCE_ID = "NITRO_SIM_INSTANCE_ID"
ENV_ROLE_ARN = "NITRO_SIM_IAM_ROLE_ARN"
#: Longest role ARN accepted (IAM's limit for a role ARN is 2048 characters).
MAX_ROLE_ARN_CHARS = 2048
#: How long the supervisor may take to report its pid (it only forks first).
SPAWN_SECONDS = 30.0
#: How much of the supervisor's log a boot failure quotes in the error log.
MAX_LOG_TAIL_BYTES = 4096
MAX_LOG_TAIL_LINES = 20
_ZERO_PCR = bytes(48)
_GIB = 1024**3
#: ``TIMEOUT_MINUTE_MS`` of the real boot wait, in seconds.
_MINUTE = 60.0
_BAD_CERT = "Invalid signing certificate"
_BOOT_FAILED = "Waiting on enclave to boot failed with error"


class EnclaveProcessError(Exception):
    """A failure in the "enclave process" half of run-enclave (printed, then E39)."""

    def __init__(self, error: NitroCliError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True, kw_only=True)
class Started:
    record: Record
    pid: int

    def run_info(self) -> dict[str, Any]:
        """``EnclaveRunInfo`` in its field order."""
        r = self.record
        return {
            "EnclaveName": r.name,
            "EnclaveID": r.enclave_id,
            "ProcessID": self.pid,
            "EnclaveCID": r.cid,
            "NumberOfCPUs": len(r.cpu_ids),
            "CPUIDs": r.cpu_ids,
            "MemoryMiB": r.memory_mib,
        }


def boot_timeout(eif_size: int, memory_mib: int) -> float:
    """``calculate_necessary_timeout``: a minute per 6 GiB of EIF plus a minute per 100 GiB of memory."""
    eif_part = 1 + (max(eif_size, 1) - 1) // (6 * _GIB)
    memory_part = 1 + (max(memory_mib << 20, 1) - 1) // (100 * _GIB)
    return (eif_part + memory_part) * _MINUTE


def parent_identity(home: Path, now: datetime) -> tuple[str, str | None]:
    """The simulated parent's instance id and IAM role ARN (see the module docstring)."""
    instance = os.environ.get(ENV_INSTANCE_ID) or SimulatedPKI.load_or_create(home, at=now).instance_id
    if not INSTANCE_ID_RE.fullmatch(instance):
        raise SimConfigError(
            f"{ENV_INSTANCE_ID} must be i- and 17 lower-case hex digits, got {instance[:40]!r}"
        )
    role = os.environ.get(ENV_ROLE_ARN) or None
    if role is not None and (len(role) > MAX_ROLE_ARN_CHARS or not role.isprintable()):
        raise SimConfigError(
            f"{ENV_ROLE_ARN} must be a printable ARN of at most {MAX_ROLE_ARN_CHARS} characters"
        )
    return instance, role


def nsm_pcrs(image: EifImage, *, debug: bool, instance_id: str, role_arn: str | None) -> dict[str, str]:
    """The boot PCRs of the enclave's NSM device, as ``--pcr`` values (index -> hex)."""
    pcrs: dict[int, bytes] = {4: extend(_ZERO_PCR, instance_id.encode())}
    if role_arn is not None:
        pcrs[3] = extend(_ZERO_PCR, role_arn.encode())
    if not debug:
        pcrs.update(image.measurements.as_pcrs())
    return {str(index): value.hex() for index, value in sorted(pcrs.items())}


def _load_eif(args: RunArgs, now: datetime) -> tuple[EifImage, int]:
    try:
        handle = open_regular(args.eif_path)
    except OSError as exc:
        raise NitroCliError(
            "E19", (args.eif_path, "Open"), subaction=f"Failed to open the EIF file: {exc.strerror or exc}"
        ) from None
    with handle:
        try:
            pool = _resources.cpu_pool()
        except NitroCliError as err:
            raise err.add_subaction("Failed to construct CPU information") from None
        try:
            _resources.check_cpu_config(pool, args.cpu_ids, args.cpu_count)
        except NitroCliError as err:
            raise err.add_subaction("Failed to get CPU configuration") from None
        size = os.fstat(handle.fileno()).st_size
        try:
            _resources.check_memory_for_eif(args.memory_mib, size)
        except NitroCliError as err:
            raise err.add_subaction("Failed to construct EnclaveManager with given arguments") from None
        if size > MAX_EIF_BYTES:
            raise NitroCliError("E35", subaction=f"Failed to initialize EIF reader: over {MAX_EIF_BYTES} B")
        data = handle.read(size)
    try:
        image = read_eif(data)
        _ = image.metadata  # parsed on access: a metadata section that is not a JSON object fails here
    except EifError as exc:
        raise NitroCliError("E35", subaction=f"Failed to initialize EIF reader: {exc}") from None
    if image.signature is not None:
        _check_signature(image, now)
    return image, size


def _check_signature(image: EifImage, now: datetime) -> None:
    """``PcrSignatureChecker::verify``: the PCR0 signature verifies, the certificate is valid now (E59)."""
    assert image.signature is not None
    try:
        ok = signature_matches(image)
        cert = decode_signature_section(image.signature)[0].certificate()
    except EifError as exc:
        raise NitroCliError("E59", subaction=f"{_BAD_CERT}: {exc}") from None
    if not ok:
        raise NitroCliError("E59", subaction=f"{_BAD_CERT}: The EIF signature is not valid")
    if not certificate_valid_at(cert, now):
        raise NitroCliError("E59", subaction=f"{_BAD_CERT}: The signing certificate is expired")


def _reserve(args: RunArgs, image: EifImage, home: Path, now: datetime) -> Record:
    """Step 3, under the lock: resources, name, id; the STARTING record."""
    instance, role = parent_identity(home, now)
    pool = _resources.cpu_pool()
    try:
        pool_mib = _resources.memory_pool_mib()
    except ValueError as exc:
        raise SimConfigError(str(exc)) from None
    with _records.locked(home):
        census = _records.reap(home)
        _records.report_lost(census.lost)
        present = census.present
        memory = _resources.allocate_memory(args.memory_mib, sum(r.memory_mib for r in present), pool_mib)
        used_cpus = {c for r in present for c in r.cpu_ids}
        cpu_ids = _resources.assign_cpus(pool, used_cpus, args.cpu_ids, args.cpu_count)
        cid = _resources.assign_cid(args.enclave_cid, {r.cid for r in present})
        name = _resources.new_enclave_name(args.enclave_name, args.eif_path, {r.name for r in present})
        enclave_id = _new_enclave_dir(instance, home, now)
        record = Record(
            enclave_id=enclave_id,
            name=name,
            cid=cid,
            cpu_ids=cpu_ids,
            memory_mib=memory,
            debug=args.debug_mode,
            eif_path=os.path.abspath(args.eif_path),
            measurements=image.measurements.to_json(),
            state=_records.STARTING,
            owner=_procs.this_process().to_json(),
            created_ns=time.time_ns(),
            extra={"nsm_pcrs": nsm_pcrs(image, debug=args.debug_mode, instance_id=instance, role_arn=role)},
        )
        directory = _records.enclave_dir(enclave_id, home)
        _records.write_json(directory / _records.METADATA_FILE, image.metadata)
        _records.save(record, home)
    return record


def _new_enclave_dir(instance: str, home: Path, now: datetime) -> str:
    for _ in range(100):
        enclave_id = new_module_id(instance, at=now)
        try:
            os.mkdir(_records.enclave_dir(enclave_id, home), 0o700)
        except FileExistsError:
            continue
        return enclave_id
    raise NitroCliError("E05", subaction="Could not pick a fresh enclave id")  # pragma: no cover


def _spawn(record: Record, home: Path) -> tuple[int, int]:
    """Start the supervisor; returns ``(read end of the boot pipe, supervisor pid)``."""
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)
    directory = _records.enclave_dir(record.enclave_id, home)
    env = {**os.environ, "NITRO_SIM_HOME": str(home)}
    module = "host.nitro_cli._supervisor"
    argv = [sys.executable, "-P", "-m", module, record.enclave_id, "--boot-fd", str(write_fd)]
    log = str(directory / _records.SUPERVISOR_LOG)
    try:
        intermediate = os.posix_spawn(
            sys.executable,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            ],
        )
    except OSError as exc:
        os.close(read_fd)
        raise NitroCliError("E05", subaction=f"Failed to spawn the enclave process: {exc}") from None
    finally:
        os.close(write_fd)
    try:
        line = _read_until(read_fd, b"\n", time.monotonic() + SPAWN_SECONDS)
    finally:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(intermediate, 0)
    if not line.startswith(b"pid:") or not line[4:-1].isdigit():
        os.close(read_fd)
        raise NitroCliError("E06", subaction="The enclave process did not start (see its supervisor.log)")
    return read_fd, int(line[4:-1])


def _read_until(fd: int, end: bytes, deadline: float, *, limit: int = MAX_BOOT_MESSAGE + 16) -> bytes:
    """Bytes from ``fd`` up to and including ``end`` (or EOF, a timeout, or ``limit`` bytes)."""
    data = b""
    while not (end and data.endswith(end)) and len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        byte = os.read(fd, 1)
        if not byte:
            break
        data += byte
    return data


def _wait_boot(read_fd: int, seconds: float) -> None:
    """Wait for the heartbeat; raise E36 with the reason otherwise."""
    try:
        first = _read_until(read_fd, b"", time.monotonic() + seconds, limit=1)
        if first == bytes([HEARTBEAT]):
            return
        if first == b"E":
            reason = _read_until(read_fd, b"\n", time.monotonic() + SPAWN_SECONDS).decode("utf-8", "replace")
            detail = reason.strip() or "the enclave failed to boot"
        elif not first:
            detail = f"no heartbeat within {seconds:.0f} s, or the enclave process exited"
        else:
            detail = f"received wrong heartbeat {first!r}"
    finally:
        os.close(read_fd)
    raise NitroCliError("E36", subaction=f"{_BOOT_FAILED}: {detail}")


def _log_tail(path: Path) -> str:
    """The last lines of the supervisor's log (its own errors and the NSM device's), on one line."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - MAX_LOG_TAIL_BYTES))
            text = handle.read(MAX_LOG_TAIL_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines()[-MAX_LOG_TAIL_LINES:] if line.strip())


def _abandon(record: Record, home: Path) -> None:
    """Undo a reservation that did not become an enclave."""
    _records.stop_processes(record.enclave_id, home)
    with _records.locked(home):
        _records.remove(record.enclave_id, record.cid, home)


def _prepare(record: Record, image: EifImage, home: Path) -> None:
    """Step 4's first half: unpack the application ramdisk and write the launch plan."""
    directory = _records.enclave_dir(record.enclave_id, home)
    if len(image.ramdisks) < 2:
        raise NitroCliError("E35", subaction="The EIF has no application ramdisk")
    try:
        app = unpack(image.ramdisks[1], directory)
        launch = plan(
            rootfs=app.rootfs,
            argv=app.argv,
            image_env=app.env,
            home=home,
            cid=record.cid,
            nsm_socket=directory / _records.NSM_SOCKET,
            host_path=os.environ.get("PATH", os.defpath),
        )
    except UnpackError as exc:
        raise NitroCliError("E35", subaction=f"Failed to load the application ramdisk: {exc}") from None
    except LaunchError as exc:
        raise NitroCliError("E36", subaction=f"{_BOOT_FAILED}: {exc}") from None
    _records.write_json(directory / LAUNCH_FILE, launch.to_json())


def run_enclave(args: RunArgs, *, home: Path, now: datetime) -> Started:
    """The enclave-process half of run-enclave (module docstring); prints its stderr lines as it goes."""
    try:
        image, eif_size = _load_eif(args, now)
        print("Start allocating memory...", file=sys.stderr, flush=True)
        record = _reserve(args, image, home, now)
    except NitroCliError as err:
        raise EnclaveProcessError(err) from None
    try:
        _prepare(record, image, home)
        read_fd, pid = _spawn(record, home)
        cpus = ", ".join(str(c) for c in record.cpu_ids)
        print(
            f"Started enclave with enclave-cid: {record.cid}, memory: {record.memory_mib} MiB, "
            f"cpu-ids: [{cpus}]",
            file=sys.stderr,
            flush=True,
        )
        _wait_boot(read_fd, boot_timeout(eif_size, record.memory_mib))
    except NitroCliError as err:
        tail = _log_tail(_records.enclave_dir(record.enclave_id, home) / _records.SUPERVISOR_LOG)
        _abandon(record, home)
        if tail and err.code == "E36":
            err.subactions[0] += f" (enclave process log: {tail})"
        raise EnclaveProcessError(err) from None
    except BaseException:
        _abandon(record, home)
        raise
    return Started(record=record, pid=pid)
