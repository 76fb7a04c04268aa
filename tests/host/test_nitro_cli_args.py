"""nitro-cli's command line in-process: clap's usage errors, value parsing (E03), --config (E01/E02/E17/E19),
explain, and the resource rules of run-enclave (CPU pool, memory, CIDs, names)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from host.nitro_cli import _resources, _run_args
from host.nitro_cli.cli import main
from host.nitro_cli.errors import NitroCliError

MORE = "\n\nFor more information, try '--help'.\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- clap's checks: exit 2, "error: ..." ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["run-enclave", "--cpu-count", "2", "--eif-path", "x.eif"],
            "error: the following required arguments were not provided:\n  --memory <memory>\n\n"
            "Usage: nitro-cli run-enclave [OPTIONS]",
            id="missing-memory",
        ),
        pytest.param(
            ["run-enclave", "--cpu-ids", "1", "--cpu-count", "2", "--memory", "64", "--eif-path", "x"],
            "error: the argument '--cpu-ids <cpu-ids>...' cannot be used with '--cpu-count <cpu-count>'",
            id="cpu-conflict",
        ),
        pytest.param(
            ["run-enclave", "--config", "c.json", "--memory", "64"],
            "error: the argument '--config <json-config>' cannot be used with '--memory <memory>'",
            id="config-conflict",
        ),
        pytest.param(
            ["run-enclave", "--memory", "1", "--memory", "2", "--cpu-count", "1", "--eif-path", "x"],
            "error: the argument '--memory <memory>' cannot be used multiple times",
            id="repeated",
        ),
        pytest.param(
            ["terminate-enclave"],
            "error: the following required arguments were not provided:\n  --enclave-id <enclave-id>\n"
            "  --all\n  --enclave-name <enclave-name>",
            id="terminate-nothing",
        ),
        pytest.param(
            ["terminate-enclave", "--all", "--enclave-id", "i-1"],
            "error: the argument '--all' cannot be used with '--enclave-id <enclave-id>'",
            id="terminate-conflict",
        ),
        pytest.param(
            ["build-enclave", "--docker-uri", "x", "--output-file", "o.eif", "--signing-certificate", "c"],
            "error: the following required arguments were not provided:\n  --private-key <private-key>",
            id="requires",
        ),
        pytest.param(
            ["pcr", "--input", "a", "--signing-certificate", "b"],
            "error: the argument '--input <input>' cannot be used with "
            "'--signing-certificate <signing-certificate>'",
            id="pcr-conflict",
        ),
        pytest.param(
            ["describe-enclaves", "--bogus"], "error: unexpected argument '--bogus' found", id="unknown"
        ),
        pytest.param(
            ["run-enclave", "--memory"], "error: a value is required for '--memory <memory>'", id="no-value"
        ),
        pytest.param(["launch-enclave"], "error: unrecognized subcommand 'launch-enclave'", id="subcommand"),
        pytest.param(["explain"], "error: the following required arguments were not provided:", id="explain"),
    ],
)
def test_clap_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith(message)
    assert err.endswith(MORE)


def test_help_version_and_no_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, "Nitro CLI 1.5.0\n", "")
    code, out, err = run(capsys)
    assert (code, out) == (2, "")
    assert "run-enclave" in err
    code, out, _ = run(capsys, "run-enclave", "--help")
    assert code == 0
    assert "--cpu-ids" in out


# -- values: E03


@pytest.mark.parametrize(
    ("flag", "value", "info"),
    [
        ("--cpu-count", "two", "`cpu-count` is not a valid integer (`two`)"),
        ("--cpu-count", "4294967296", "`cpu-count` is not a valid integer (`4294967296`)"),
        ("--cpu-count", " 2", "`cpu-count` is not a valid integer (` 2`)"),
        ("--memory", "512MB", "`memory` is not a valid integer (`512MB`)"),
        ("--memory", "+512", "`memory` is not a valid integer (`+512`)"),
        ("--memory", "\uff15\uff11\uff12", "`memory` is not a valid integer (`\uff15\uff11\uff12`)"),
        ("--enclave-cid", "-1", "`enclave-cid` is not a valid integer (`-1`)"),
    ],
)
def test_bad_values_are_e03(
    capsys: pytest.CaptureFixture[str], sim_home: Path, flag: str, value: str, info: str
) -> None:
    argv = {"--cpu-count": "1", "--memory": "64", "--eif-path": "x.eif", flag: value}
    code, out, err = run(capsys, "run-enclave", *[w for kv in argv.items() for w in kv])
    assert (code, out) == (3, "")
    assert err.startswith(f"[ E03 ] Invalid argument provided. The parameter {info}\n\n")
    assert "cli-errors.html#E03" in err
    log = Path(err.rsplit('"', 2)[1])
    assert log.parent == sim_home / "log"
    assert log.read_text().startswith("Run Enclave: Failed to construct RunEnclave arguments -> ")


@pytest.mark.parametrize(
    ("cid", "reason"),
    [
        ("1", "CID 1 is a well-known CID"),
        ("2", "CID 2 is a well-known CID"),
        ("3", "CID 3 is the CID of the parent VM"),
        ("4294967295", "CID 4294967295 is a well-known CID"),
        ("4294967296", "CID 4294967296 is higher than the maximum supported (u32 max)"),
    ],
)
def test_reserved_cids(capsys: pytest.CaptureFixture[str], sim_home: Path, cid: str, reason: str) -> None:
    code, _, err = run(
        capsys, "run-enclave", "--cpu-count", "1", "--memory", "64", "--eif-path", "x", "--enclave-cid", cid
    )
    assert code == 3
    assert err.startswith("[ E03 ] Invalid argument provided. The parameter `MISSING_INFO` is not a valid")
    assert reason in Path(err.rsplit('"', 2)[1]).read_text()


def test_cid_zero_means_automatic(capsys: pytest.CaptureFixture[str], sim_home: Path) -> None:
    code, _, err = run(
        capsys,
        "run-enclave",
        "--cpu-count",
        "1",
        "--memory",
        "64",
        "--eif-path",
        "no.eif",
        "--enclave-cid",
        "0",
    )
    assert code == 39  # the EIF does not exist; the CID was accepted
    assert err.startswith("The enclave CID will be auto-generated as the provided CID is 0\n[ E19 ]")


def test_memory_units() -> None:
    assert [_resources.parse_memory(v) for v in ("512", "512M", "512m", "2G", "2g", "1T")] == [
        512, 512, 512, 2048, 2048, 1024 * 1024,
    ]  # fmt: skip
    with pytest.raises(NitroCliError, match="E03"):
        _resources.parse_memory("2K")


# -- --config


@pytest.mark.parametrize(
    ("content", "code"),
    [
        pytest.param('{"eif_path": "x.eif", "memory_mib": 64}', 1, id="E01-no-cpus"),
        pytest.param('{"eif_path": "x.eif", "memory_mib": 64, "cpu_count": 1, "cpu_ids": [1]}', 2, id="E02"),
        pytest.param('{"eif_path": "x.eif", "cpu_count": 1}', 17, id="E17-no-memory"),
        pytest.param('{"eif_path": "x.eif", "memory_mib": "64", "cpu_count": 1}', 17, id="E17-type"),
        pytest.param('{"eif_path": "x.eif", "memory_mib": 64.0, "cpu_count": 1}', 17, id="E17-float"),
        pytest.param('{"eif_path": "x.eif", "memory_mib": 64, "cpu_count": true}', 17, id="E17-bool"),
        pytest.param(
            '{"eif_path": "x.eif", "memory_mib": 64, "memory_mib": 65, "cpu_count": 1}', 17, id="E17-dup"
        ),
        pytest.param('{"eif_path": "x.eif", "memory_mib": NaN, "cpu_count": 1}', 17, id="E17-nan"),
        pytest.param(
            '{"eif_path": "x.eif", "memory_mib": 64, "cpu_count": 1, "debug_mode": null}', 17, id="E17-null"
        ),
        pytest.param("[1, 2]", 17, id="E17-array"),
        pytest.param("{", 17, id="E17-syntax"),
    ],
)
def test_config_errors(capsys: pytest.CaptureFixture[str], sim_home: Path, content: str, code: int) -> None:
    config = sim_home / "run.json"
    config.write_text(content)
    status, out, err = run(capsys, "run-enclave", "--config", str(config))
    assert (status, out) == (code, "")
    assert err.startswith(f"[ E{code:02d} ] ")


def test_config_file_missing(capsys: pytest.CaptureFixture[str], sim_home: Path) -> None:
    code, _, err = run(capsys, "run-enclave", "--config", str(sim_home / "none.json"))
    assert code == 19
    assert f"File: '{sim_home / 'none.json'}', failing operation: 'Open'." in err


def test_config_values(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(
        json.dumps({"eif_path": "a.eif", "memory_mib": 64, "cpu_ids": [1, 3], "attach_console": True, "x": 1})
    )
    args = _run_args.from_config(str(config))
    assert (args.eif_path, args.memory_mib, args.cpu_ids, args.cpu_count) == ("a.eif", 64, [1, 3], None)
    assert (args.debug_mode, args.attach_console, args.enclave_cid, args.enclave_name) == (
        True,
        True,
        None,
        None,
    )


# -- explain and the image commands' dispatch


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", "--error-code", "E22")
    assert (code, out) == (0, "")
    assert err.startswith(
        "Insufficient CPUs available in the pool. Such error appears when the user requests"
    )
    assert run(capsys, "explain", "--error-code", "E99") == (0, "", "No such error code E99\n")


def test_sign_eif_without_a_path_is_e01(capsys: pytest.CaptureFixture[str], sim_home: Path) -> None:
    code, _, err = run(capsys, "sign-eif")
    assert code == 1
    assert err.startswith(
        "[ E01 ] Missing mandatory argument. User did not provide the `MISSING_INFO` argument."
    )


# -- resources


def test_cpu_pool() -> None:
    assert _resources.cpu_pool({"NITRO_SIM_CPU_POOL": "1-3,7, 9"}) == [1, 2, 3, 7, 9]
    assert _resources.cpu_pool({}) == [1, 2, 3, 4, 5, 6, 7]
    for text, code in (("1-2-3", "E24"), ("a", "E23"), ("1-", "E23"), ("0-100000", "E24")):
        with pytest.raises(NitroCliError) as info:
            _resources.cpu_pool({"NITRO_SIM_CPU_POOL": text})
        assert info.value.code == code


def test_cpu_assignment() -> None:
    assert _resources.assign_cpus([1, 2, 3], {2}, None, 2) == [1, 3]
    assert _resources.assign_cpus([1, 2, 3], set(), [3, 1], None) == [3, 1]
    for in_use, ids, count in (({1}, [1], None), ({1, 2}, None, 2), (set(), None, 0)):
        with pytest.raises(NitroCliError) as info:
            _resources.assign_cpus([1, 2, 3], in_use, ids, count)
        assert info.value.code == "E29"


def test_memory_and_cids() -> None:
    assert _resources.allocate_memory(65, 0, 1000) == 66
    assert _resources.min_memory_mib(1) == 4
    assert _resources.min_memory_mib(3 * 1024 * 1024 + 1) == 16
    with pytest.raises(NitroCliError, match="E27"):
        _resources.allocate_memory(128, 900, 1000)
    assert _resources.assign_cid(None, {16, 17, 19}) == 18
    assert _resources.assign_cid(0, set()) == 16
    assert _resources.assign_cid(5, {16}) == 5
    with pytest.raises(NitroCliError, match="E29"):
        _resources.assign_cid(5, {5})


def test_enclave_names() -> None:
    assert _resources.new_enclave_name(None, "/a/b/app.eif.eif", set()) == "app"
    assert _resources.new_enclave_name(None, "image", {"image"}) == "image_1"
    assert _resources.new_enclave_name("x", "a.eif", {"x", "x_1"}) == "x_2"


def test_an_os_error_is_e19_not_a_traceback(
    capsys: pytest.CaptureFixture[str], sim_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from host.nitro_cli import _manage

    def fail(home: Path, *, with_metadata: bool) -> list[object]:
        raise PermissionError(13, "Permission denied", "/somewhere/record.json")

    monkeypatch.setattr(_manage, "describe_enclaves", fail)
    code, out, err = run(capsys, "describe-enclaves")
    assert (code, out) == (19, "")
    assert err.startswith("[ E19 ] File operation failure.")
    assert "Permission denied: /somewhere/record.json" in Path(err.rsplit('"', 2)[1]).read_text()


def test_fifos_and_devices_are_not_read(capsys: pytest.CaptureFixture[str], sim_home: Path) -> None:
    fifo = sim_home / "fifo"
    os.mkfifo(fifo)
    assert run(capsys, "run-enclave", "--config", str(fifo))[0] == 19
    for path in (str(fifo), "/dev/zero"):
        code, _, err = run(capsys, "run-enclave", "--eif-path", path, "--cpu-count", "1", "--memory", "64")
        assert code == 39
        assert err.startswith("[ E19 ] File operation failure.")
        assert f"File: '{path}', failing operation: 'Open'." in err


def test_an_eif_whose_metadata_is_not_an_object_is_e35(
    capsys: pytest.CaptureFixture[str], sim_home: Path
) -> None:
    from attestation.cpio import write_newc
    from attestation.eif import SectionType, _assemble

    ramdisk = write_newc([])
    sections = [
        (SectionType.KERNEL, b"k"),
        (SectionType.CMDLINE, b"c"),
        (SectionType.METADATA, b"[1, 2]"),
        (SectionType.RAMDISK, ramdisk),
        (SectionType.RAMDISK, ramdisk),
    ]
    eif = sim_home / "bad-metadata.eif"
    eif.write_bytes(_assemble(sections, flags=0))
    code, _, err = run(capsys, "run-enclave", "--eif-path", str(eif), "--cpu-count", "1", "--memory", "64")
    assert code == 39
    assert err.startswith("[ E35 ] EIF file parsing error.")
    assert "not a JSON object" in Path(err.split('error log found at "')[1].split('"')[0]).read_text()


def test_an_overlong_enclave_name_is_e58(capsys: pytest.CaptureFixture[str], sim_home: Path) -> None:
    argv = ["run-enclave", "--cpu-count", "1", "--memory", "64", "--eif-path", "x.eif", "--enclave-name"]
    code, _, err = run(capsys, *argv, "n" * 257)
    assert code == 58
    assert err.startswith("[ E58 ] Naming error.")
