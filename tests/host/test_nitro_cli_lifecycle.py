"""nitro-cli's enclave lifecycle with real processes: run-enclave, describe-enclaves, console, terminate.

Every test runs the installed ``nitro-cli`` script in a fresh NITRO_SIM_HOME and, at teardown, terminates
what is left and checks that no process of that home survives (supervisor, nsm-sim, app).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation.cpio import CpioEntry, write_newc
from attestation.eif import build_eif, measure
from attestation.eif_sign import EifSigner
from attestation.nsm import extend
from enclave.nsm import NSMClient, SimulatedDeviceTransport
from host.nitro_cli._supervisor import MAX_CONSOLE_LOG_BYTES
from nitro_sim.procs import READY_TIMEOUT_S as STARTUP_SECONDS
from nitro_sim.stack import child_environment, program

NITRO_CLI = program("nitro-cli")[0]
ZERO = bytes(48)
#: An app that prints two lines and then waits to be terminated.
WAITING_APP = (
    b"import os, time\n"
    b"print('hello from', os.environ['NITRO_SIM_CID'], flush=True)\n"
    b"print('cwd', os.getcwd(), flush=True)\n"
    b"while True:\n    time.sleep(1)\n"
)


def _dir(path: str) -> CpioEntry:
    return CpioEntry(path=path, mode=stat.S_IFDIR | 0o755)


def _file(path: str, data: bytes, mode: int = 0o644) -> CpioEntry:
    return CpioEntry(path=path, mode=stat.S_IFREG | mode, data=data)


BOOTSTRAP = write_newc(
    [_dir("dev"), _file("init", b"init stand-in", 0o755), _file("nsm.ko", b"nsm.ko stand-in")]
)
METADATA = {
    "ImageName": "hello-image",
    "ImageVersion": "1.0",
    "BuildMetadata": {
        "BuildTime": "1970-01-01T00:00:00+00:00",
        "BuildTool": "nitro-cli",
        "BuildToolVersion": "1.5.0",
        "OperatingSystem": "Linux",
        "KernelVersion": "6.1",
    },
    "DockerInfo": {"Config": {"WorkingDir": "/app"}},
    "CustomMetadata": {"team": "tests"},
}


def app_ramdisk(
    script: bytes = WAITING_APP, *, cmd: bytes = b"python3\n/app/main.py\n", pad: int = 0
) -> bytes:
    entries = [_dir("rootfs"), _dir("rootfs/app"), _file("rootfs/app/main.py", script)]
    if pad:
        entries.append(_file("rootfs/app/padding", bytes(pad)))
    return write_newc([*entries, _file("cmd", cmd), _file("env", b"GREETING=hi\n")])


def make_eif(path: Path, ramdisk: bytes | None = None, *, signature: bytes | None = None) -> Path:
    path.write_bytes(
        build_eif(
            kernel=b"kernel stand-in",
            cmdline=b"console=ttyS0",
            ramdisks=[BOOTSTRAP, ramdisk or app_ramdisk()],
            metadata=METADATA,
            signature=signature,
        )
    )
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


class Cli:
    """Runs nitro-cli in one simulation home."""

    def __init__(self, home: Path, **extra: str) -> None:
        self.home = home
        # No developer's ~/.aws/credentials reach the enclaves' apps.
        self.env = child_environment(home) | {
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-such-file"),
            "NITRO_SIM_CPU_POOL": "1-3",
            **extra,
        }

    def __call__(self, *args: str, timeout: float = STARTUP_SECONDS * 2) -> Result:
        proc = subprocess.run(
            [NITRO_CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def run(self, eif: Path, *extra: str, memory: str = "128", cpus: str = "1") -> dict[str, object]:
        """run-enclave with ``--cpu-count cpus`` unless ``extra`` lists ``--cpu-ids``."""
        cpu = [] if "--cpu-ids" in extra else ["--cpu-count", cpus]
        result = self("run-enclave", "--eif-path", str(eif), *cpu, "--memory", memory, *extra)
        assert result.code == 0, result.err
        info = result.json()
        assert isinstance(info, dict)
        return info

    def describe(self) -> list[dict[str, object]]:
        result = self("describe-enclaves")
        assert result.code == 0, result.err
        value = result.json()
        assert isinstance(value, list)
        return value


def _processes_of(home: Path) -> list[int]:
    """Live processes whose command line or environment mentions ``home`` (ours only)."""
    needle = os.fsencode(home)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                if handle.read().rpartition(b")")[2].split()[0] in (b"Z", b"X"):
                    continue
            blobs = [Path(f"/proc/{entry}/cmdline").read_bytes(), Path(f"/proc/{entry}/environ").read_bytes()]
        except OSError:
            continue
        if any(needle in blob for blob in blobs):
            found.append(int(entry))
    return found


def wait_for(predicate: object, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + STARTUP_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def cli(sim_home: Path) -> Iterator[Cli]:
    runner = Cli(sim_home)
    yield runner
    runner("terminate-enclave", "--all")
    leftovers = _processes_of(sim_home)
    if leftovers:
        time.sleep(1)
        leftovers = _processes_of(sim_home)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"
    assert not list((sim_home / "enclaves").glob("i-*"))


@pytest.fixture
def eif(tmp_path: Path) -> Path:
    return make_eif(tmp_path / "hello.eif")


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _procs_json(home: Path, enclave_id: object) -> dict[str, dict[str, int]]:
    value = json.loads((home / "enclaves" / str(enclave_id) / "procs.json").read_text())
    assert isinstance(value, dict)
    return value


# -- run, describe, terminate


def test_run_describe_terminate(cli: Cli, eif: Path) -> None:
    result = cli("run-enclave", "--eif-path", str(eif), "--cpu-count", "2", "--memory", "127")
    assert result.code == 0, result.err
    assert (
        result.err == "Start allocating memory...\n"
        "Started enclave with enclave-cid: 16, memory: 128 MiB, cpu-ids: [1, 2]\n"
    )
    info = result.json()
    assert isinstance(info, dict)
    assert list(info) == [
        "EnclaveName",
        "EnclaveID",
        "ProcessID",
        "EnclaveCID",
        "NumberOfCPUs",
        "CPUIDs",
        "MemoryMiB",
    ]
    assert info["EnclaveName"] == "hello"
    assert info["EnclaveCID"] == 16
    assert info["NumberOfCPUs"] == 2
    assert info["CPUIDs"] == [1, 2]
    assert info["MemoryMiB"] == 128
    assert result.out.startswith('{\n  "EnclaveName": "hello",\n  "EnclaveID": "i-')
    enclave_id = str(info["EnclaveID"])
    instance, _, slot = enclave_id.partition("-enc")
    assert len(instance) == 19
    assert len(slot) == 16
    assert _pid_alive(int(str(info["ProcessID"])))

    [described] = cli.describe()
    assert list(described) == [
        "EnclaveName", "EnclaveID", "ProcessID", "EnclaveCID", "NumberOfCPUs", "CPUIDs", "MemoryMiB", "State",
        "Flags", "Measurements",
    ]  # fmt: skip
    assert described["State"] == "RUNNING"
    assert described["Flags"] == "NONE"
    expected = measure(b"kernel stand-in", b"console=ttyS0", [BOOTSTRAP, app_ramdisk()])
    assert described["Measurements"] == expected.to_json()
    assert described["ProcessID"] == info["ProcessID"]

    with_metadata = cli("describe-enclaves", "--metadata").json()
    assert isinstance(with_metadata, list)
    assert with_metadata[0]["ImageName"] == "hello-image"
    assert with_metadata[0]["ImageVersion"] == "1.0"
    assert list(with_metadata[0]["Metadata"]) == [
        "BuildTime", "BuildTool", "BuildToolVersion", "OperatingSystem", "KernelVersion", "DockerInfo",
        "team",
    ]  # fmt: skip

    done = cli("terminate-enclave", "--enclave-id", enclave_id)
    assert done.code == 0, done.err
    assert done.err == f"Successfully terminated enclave {enclave_id}.\n"
    assert (
        done.out
        == f'{{\n  "EnclaveName": "hello",\n  "EnclaveID": "{enclave_id}",\n  "Terminated": true\n}}\n'
    )
    assert cli.describe() == []
    assert not _pid_alive(int(str(info["ProcessID"])))
    assert cli("describe-enclaves").out == "[]\n"


def test_names_get_suffixes_and_terminate_by_name_and_all(cli: Cli, eif: Path) -> None:
    first = cli.run(eif)
    second = cli.run(eif)
    third = cli.run(eif, "--enclave-name", "hello")
    assert [first["EnclaveName"], second["EnclaveName"], third["EnclaveName"]] == [
        "hello",
        "hello_1",
        "hello_2",
    ]
    assert [first["EnclaveCID"], second["EnclaveCID"], third["EnclaveCID"]] == [16, 17, 18]
    assert cli("terminate-enclave", "--enclave-name", "hello_1").code == 0
    assert [d["EnclaveName"] for d in cli.describe()] == ["hello", "hello_2"]
    everything = cli("terminate-enclave", "--all")
    assert everything.code == 0
    terminated = everything.json()
    assert isinstance(terminated, list)
    assert [t["EnclaveName"] for t in terminated] == ["hello", "hello_2"]
    assert all(t["Terminated"] is True for t in terminated)
    assert cli("terminate-enclave", "--all").out == "[]\n"


def test_unknown_enclave_id_and_name(cli: Cli) -> None:
    by_id = cli("terminate-enclave", "--enclave-id", "i-0123456789abcdef0-enc0123456789abcdef")
    assert by_id.code == 11
    assert by_id.err.startswith("[ E11 ] Socket error.")
    by_name = cli("terminate-enclave", "--enclave-name", "nobody")
    assert by_name.code == 58
    assert by_name.err.startswith("[ E58 ] Naming error.")
    console = cli("console", "--enclave-id", "i-0123456789abcdef0-enc0123456789abcdef")
    assert console.code == 11


def test_the_enclave_nsm_holds_the_image_pcrs(cli: Cli, eif: Path) -> None:
    cli.env["NITRO_SIM_IAM_ROLE_ARN"] = "arn:aws:iam::123456789012:role/enclave"
    info = cli.run(eif)
    socket_path = cli.home / "enclaves" / str(info["EnclaveID"]) / "nsm.sock"
    expected = measure(b"kernel stand-in", b"console=ttyS0", [BOOTSTRAP, app_ramdisk()])
    instance = str(info["EnclaveID"]).split("-enc")[0]
    with NSMClient(SimulatedDeviceTransport(socket_path)) as nsm:
        assert nsm.describe_pcr(0).data == expected.pcr0
        assert nsm.describe_pcr(2).data == expected.pcr2
        assert nsm.describe_pcr(3).data == extend(ZERO, b"arn:aws:iam::123456789012:role/enclave")
        assert nsm.describe_pcr(4).data == extend(ZERO, instance.encode())
        assert nsm.describe_pcr(8).data == ZERO
        assert nsm.describe_nsm().module_id == info["EnclaveID"]


def test_debug_mode_zeroes_the_image_pcrs(cli: Cli, eif: Path) -> None:
    info = cli.run(eif, "--debug-mode")
    assert cli.describe()[0]["Flags"] == "DEBUG_MODE"
    socket_path = cli.home / "enclaves" / str(info["EnclaveID"]) / "nsm.sock"
    with NSMClient(SimulatedDeviceTransport(socket_path)) as nsm:
        assert [nsm.describe_pcr(i).data for i in (0, 1, 2, 3)] == [ZERO] * 4
        assert nsm.describe_pcr(4).data != ZERO


# -- console


def test_console_in_debug_mode(cli: Cli, eif: Path) -> None:
    info = cli.run(eif, "--debug-mode", "--enclave-name", "dbg")
    app_dir = cli.home / "enclaves" / str(info["EnclaveID"]) / "rootfs"  # "/", as the real init
    result = cli("console", "--enclave-name", "dbg", "--disconnect-timeout", "1")
    assert result.code == 0, result.err
    assert result.out == (
        f"Connecting to the console for enclave {info['EnclaveCID']}...\n"
        "Successfully connected to the console.\n"
        f"hello from {info['EnclaveCID']}\ncwd {app_dir}\n"
    )


def test_console_is_refused_without_debug_mode(cli: Cli, eif: Path) -> None:
    info = cli.run(eif)
    result = cli("console", "--enclave-id", str(info["EnclaveID"]))
    assert result.code == 44
    assert result.out == ""
    assert result.err.startswith("[ E44 ] Enclave console connection failure.")
    log = result.err.rsplit('"', 2)[1]
    assert "include '--debug-mode' in the run-enclave command" in Path(log).read_text()


def test_attach_console_streams_until_the_enclave_ends(cli: Cli, tmp_path: Path) -> None:
    script = b"print('one', flush=True)\nprint('two', flush=True)\n"
    eif = make_eif(tmp_path / "short.eif", app_ramdisk(script))
    result = cli(
        "run-enclave", "--eif-path", str(eif), "--cpu-count", "1", "--memory", "64", "--attach-console"
    )
    assert result.code == 0, result.err
    head, _, tail = result.out.partition("}\n")
    assert json.loads(head + "}")["EnclaveName"] == "short"
    assert tail.endswith("Successfully connected to the console.\none\ntwo\n")
    wait_for(lambda: cli.describe() == [], "the enclave to end")


def test_the_console_log_is_rotated_at_its_bound(cli: Cli, tmp_path: Path) -> None:
    script = (
        b"import sys, time\nfor i in range(1600):\n    sys.stdout.write('x' * 1023 + '\\n')\n"
        b"sys.stdout.flush()\nprint('done', flush=True)\nwhile True:\n    time.sleep(1)\n"
    )
    eif = make_eif(tmp_path / "loud.eif", app_ramdisk(script))
    info = cli.run(eif, "--debug-mode")
    log = cli.home / "enclaves" / str(info["EnclaveID"]) / "console.log"
    wait_for(lambda: log.exists() and log.read_bytes().endswith(b"done\n"), "the app's last line")
    old = log.with_name("console.log.1")
    assert log.stat().st_size <= MAX_CONSOLE_LOG_BYTES
    assert old.stat().st_size <= MAX_CONSOLE_LOG_BYTES
    assert log.stat().st_size + old.stat().st_size == 1600 * 1024 + len(b"done\n")
    tail = cli("console", "--enclave-id", str(info["EnclaveID"]), "--disconnect-timeout", "0")
    assert tail.out.endswith("x\ndone\n")


# -- enclaves that die


def test_an_app_that_exits_ends_its_enclave(cli: Cli, tmp_path: Path) -> None:
    eif = make_eif(tmp_path / "quick.eif", app_ramdisk(b"pass\n"))
    cli.run(eif, "--enclave-cid", "30")
    wait_for(lambda: cli.describe() == [], "the enclave to end")
    assert cli.run(eif, "--enclave-cid", "30")["EnclaveCID"] == 30


@pytest.mark.parametrize("victim", ["app", "supervisor", "nsm"])
def test_killed_processes_free_the_enclave(cli: Cli, eif: Path, victim: str) -> None:
    info = cli.run(eif, "--enclave-cid", "40", "--cpu-ids", "3", memory="64", cpus="1")
    procs = _procs_json(cli.home, info["EnclaveID"])
    pids = {name: proc["pid"] for name, proc in procs.items()}
    os.kill(pids[victim], signal.SIGKILL)
    wait_for(lambda: cli.describe() == [], f"the enclave to be gone after its {victim} was killed")
    wait_for(lambda: not any(_pid_alive(p) for p in pids.values()), "every process of the enclave to end")
    again = cli(
        "run-enclave", "--eif-path", str(eif), "--cpu-ids", "3", "--memory", "64", "--enclave-cid", "40"
    )
    assert again.code == 0, again.err


def test_a_killed_supervisor_is_reported(cli: Cli, eif: Path) -> None:
    info = cli.run(eif)
    procs = _procs_json(cli.home, info["EnclaveID"])
    os.kill(procs["supervisor"]["pid"], signal.SIGKILL)
    wait_for(lambda: not _pid_alive(procs["supervisor"]["pid"]), "the supervisor to die")
    result = cli("describe-enclaves")
    assert result.out == "[]\n"
    assert f"Enclave {info['EnclaveID']} (hello) is no longer running" in result.err


# -- races and resources


def test_two_runs_racing_for_one_cid(cli: Cli, eif: Path) -> None:
    args = [NITRO_CLI, "run-enclave", "--eif-path", str(eif), "--cpu-count", "1", "--memory", "64"]
    procs = [
        subprocess.Popen(
            [*args, "--enclave-cid", "42"],
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = sorted((p.wait(timeout=STARTUP_SECONDS * 2), p.communicate()[1]) for p in procs)
    assert [code for code, _ in outcomes] == [0, 39]
    loser = outcomes[1][1]
    assert loser.startswith("Start allocating memory...\n[ E29 ] Ioctl failure.")
    assert "\nFailed connections: 1\n[ E39 ] Enclave process connection failure." in loser
    assert [d["EnclaveCID"] for d in cli.describe()] == [42]


RESOURCE_CASES = {
    "E20": (["--cpu-ids", "1", "1"], {}, "User provided `cpu-ids` contains same CPU(s) (CPU(s) 1)"),
    "E21": (["--cpu-ids", "9"], {}, "User provided `cpu-ids` contains CPU 9, which is not available"),
    "E22": (["--cpu-count", "4"], {}, "User provided `cpu-count` is 4, which is more than"),
    "E23": (["--cpu-count", "1"], {"NITRO_SIM_CPU_POOL": "1-x"}, "Malformed CPU ID error"),
    "E24": (["--cpu-count", "1"], {"NITRO_SIM_CPU_POOL": "1-2-3"}, "CPU error"),
    "E26": (["--cpu-count", "1", "--memory", "0"], {}, "is 0 MB, but based on the EIF"),
    "E27": (
        ["--cpu-count", "1"],
        {"NITRO_SIM_MEMORY_MIB": "100"},
        "User provided `memory` is 128 MB, which is more than the available hugepage memory",
    ),
    "E29-min-memory": (["--cpu-count", "1", "--memory", "32"], {}, "Ioctl failure."),
    "E29-no-cpu": (["--cpu-count", "0"], {}, "Ioctl failure."),
}


@pytest.mark.parametrize("case", list(RESOURCE_CASES))
def test_resource_errors(cli: Cli, eif: Path, case: str) -> None:
    args, extra_env, text = RESOURCE_CASES[case]
    code = case.split("-", maxsplit=1)[0]
    cli.env.update(extra_env)
    if "--memory" not in args:
        args = [*args, "--memory", "128"]
    result = cli("run-enclave", "--eif-path", str(eif), *args)
    assert result.code == 39, result.err
    assert result.out == ""
    assert f"[ {code} ] " in result.err
    assert text in result.err
    assert "Failed connections: 1\n[ E39 ]" in result.err


def test_memory_below_four_times_the_eif(cli: Cli, tmp_path: Path) -> None:
    eif = make_eif(tmp_path / "big.eif", app_ramdisk(pad=3 * 1024 * 1024))
    result = cli("run-enclave", "--eif-path", str(eif), "--cpu-count", "1", "--memory", "8")
    assert result.code == 39
    assert result.err.startswith(
        "[ E26 ] Insufficient memory requested. User provided `memory` is 8 MB, but based on the EIF file "
        "size, "
        "the minimum memory should be 16 MB\n"
    )


def test_cpus_in_use_are_refused(cli: Cli, eif: Path) -> None:
    cli.run(eif, "--cpu-ids", "2", memory="64", cpus="1")
    taken = cli("run-enclave", "--eif-path", str(eif), "--cpu-ids", "2", "--memory", "64")
    assert taken.code == 39
    assert "[ E29 ]" in taken.err
    assert cli.run(eif, memory="64", cpus="2")["CPUIDs"] == [1, 3]
    full = cli("run-enclave", "--eif-path", str(eif), "--cpu-count", "1", "--memory", "64")
    assert full.code == 39
    assert "[ E29 ]" in full.err


# -- bad images


def test_missing_corrupt_and_unbootable_images(cli: Cli, tmp_path: Path) -> None:
    missing = cli(
        "run-enclave", "--eif-path", str(tmp_path / "nope.eif"), "--cpu-count", "1", "--memory", "64"
    )
    assert missing.code == 39
    assert f"File: '{tmp_path / 'nope.eif'}', failing operation: 'Open'." in missing.err
    corrupt = tmp_path / "corrupt.eif"
    corrupt.write_bytes(b".eif" + bytes(100))
    bad = cli("run-enclave", "--eif-path", str(corrupt), "--cpu-count", "1", "--memory", "64")
    assert bad.code == 39
    assert bad.err.startswith("[ E35 ] EIF file parsing error.")
    unbootable = make_eif(tmp_path / "nobin.eif", app_ramdisk(cmd=b"no-such-program-anywhere\n"))
    failed = cli("run-enclave", "--eif-path", str(unbootable), "--cpu-count", "1", "--memory", "64")
    assert failed.code == 39
    assert "[ E36 ] Enclave boot failure." in failed.err
    log = failed.err.split('error log found at "')[1].split('"')[0]
    assert "no-such-program-anywhere: No such file or directory" in Path(log).read_text()
    assert list((cli.home / "enclaves").glob("i-*")) == []


def _signer(tmp_path: Path, *, days: int) -> EifSigner:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eif signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA384())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return EifSigner.from_pem(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def test_signed_images(cli: Cli, tmp_path: Path) -> None:
    ramdisk = app_ramdisk()
    pcr0 = measure(b"kernel stand-in", b"console=ttyS0", [BOOTSTRAP, ramdisk]).pcr0
    good = make_eif(tmp_path / "signed.eif", ramdisk, signature=_signer(tmp_path, days=10).sign_pcr0(pcr0))
    info = cli.run(good)
    measurements = cli.describe()[0]["Measurements"]
    assert isinstance(measurements, dict)
    assert "PCR8" in measurements
    with NSMClient(
        SimulatedDeviceTransport(cli.home / "enclaves" / str(info["EnclaveID"]) / "nsm.sock")
    ) as nsm:
        assert nsm.describe_pcr(8).data.hex() == measurements["PCR8"]
    expired = make_eif(
        tmp_path / "expired.eif", ramdisk, signature=_signer(tmp_path, days=-1).sign_pcr0(pcr0)
    )
    refused = cli("run-enclave", "--eif-path", str(expired), "--cpu-count", "1", "--memory", "64")
    assert refused.code == 39
    assert refused.err.startswith("[ E59 ] EIF signature checker error.")
    other = make_eif(
        tmp_path / "other.eif", ramdisk, signature=_signer(tmp_path, days=10).sign_pcr0(bytes(48))
    )
    assert "[ E59 ]" in cli("run-enclave", "--eif-path", str(other), "--cpu-count", "1", "--memory", "64").err


def test_run_from_a_config_file(cli: Cli, eif: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "eif_path": str(eif),
                "memory_mib": 64,
                "cpu_ids": [3],
                "enclave_cid": 77,
                "enclave_name": "cfg",
                "debug_mode": True,
            }
        )
    )
    result = cli("run-enclave", "--config", str(config))
    assert result.code == 0, result.err
    [described] = cli.describe()
    assert (described["EnclaveName"], described["EnclaveCID"], described["CPUIDs"], described["Flags"]) == (
        "cfg", 77, [3], "DEBUG_MODE",
    )  # fmt: skip


def test_python_module_run(cli: Cli, sim_home: Path, tmp_path: Path) -> None:
    """``python3 -m pkg`` from the image's root imports the image's package (the lead's Dockerfile shape)."""
    ramdisk = write_newc(
        [
            _dir("rootfs"),
            _dir("rootfs/pkg"),
            _file("rootfs/pkg/__init__.py", b""),
            _file("rootfs/pkg/__main__.py", b"import sys\nprint('module', __file__, flush=True)\n"),
            _file("cmd", b"python3\n-m\npkg\n"),
            _file("env", b""),
        ]
    )
    eif = tmp_path / "mod.eif"
    eif.write_bytes(build_eif(kernel=b"k", cmdline=b"c", ramdisks=[BOOTSTRAP, ramdisk], metadata=None))
    result = cli(
        "run-enclave", "--eif-path", str(eif), "--cpu-count", "1", "--memory", "64", "--attach-console"
    )
    assert result.code == 0, result.err
    assert f"module {sim_home}/enclaves/" in result.out
    assert result.out.rstrip().endswith("/rootfs/pkg/__main__.py")
