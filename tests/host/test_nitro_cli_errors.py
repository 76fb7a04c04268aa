"""nitro-cli's error texts, rendering, log files and exit statuses (host/nitro_cli/errors.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from host.nitro_cli.errors import (
    HELP_URL,
    MAX_ERROR_LOGS,
    NitroCliError,
    detailed_info,
    error_name,
    explain,
    is_known_code,
)

AT = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def test_every_code_has_a_name_and_a_template() -> None:
    codes = [f"E{n:02d}" for n in range(61)]
    assert all(is_known_code(code) for code in codes)
    assert not is_known_code("E61")
    assert error_name("E26") == "InsufficientMemoryRequested"
    assert error_name("E36") == "EnclaveBootFailure"
    for code in codes:
        assert detailed_info(code, ()).startswith(f"[ {code} ] ")
        assert "No such error code" not in detailed_info(code, ())


@pytest.mark.parametrize(
    ("code", "info", "text"),
    [
        pytest.param(
            "E01",
            ("memory",),
            "Missing mandatory argument. User did not provide the `memory` argument.",
            id="E01",
        ),
        pytest.param(
            "E02",
            ("cpu-count", "cpu-ids"),
            "Conflicting arguments. User provided both `cpu-count` and `cpu-ids`.",
            id="E02",
        ),
        pytest.param(
            "E03",
            (),
            "Invalid argument provided. The parameter `MISSING_INFO` is not a valid integer (`MISSING_INFO`)",
            id="E03-missing-info",
        ),
        pytest.param(
            "E26",
            ("memory", "0"),
            "Insufficient memory requested. User provided `memory` is 0 MB, and memory should be greater "
            "than 0 MB.",
            id="E26-zero",
        ),
        pytest.param(
            "E26",
            ("memory", "64", "256"),
            "Insufficient memory requested. User provided `memory` is 64 MB, but based on the EIF file "
            "size, the minimum memory should be 256 MB",
            id="E26-eif",
        ),
        pytest.param(
            "E19",
            ("/x.eif", "Open"),
            "File operation failure. Such error appears when the system fails to perform the requested "
            "file operations, such as opening the EIF file when launching an enclave, or seeking to a "
            "specific offset in the EIF file, or writing to the log file.\nFile: '/x.eif', failing "
            "operation: 'Open'.",
            id="E19-file",
        ),
        pytest.param(
            "E22",
            ("cpu-count", "9"),
            "Insufficient CPUs available in the pool. User provided `cpu-count` is 9, which is more than "
            "the configured CPU pool size.\nYou can increase the CPU pool size by editing the `cpu_count` "
            "value from '/etc/nitro_enclaves/allocator.yaml' and then enable the "
            "nitro-enclaves-allocator.service.",
            id="E22",
        ),
    ],
)
def test_templates_are_filled_as_nitro_cli_does(code: str, info: tuple[str, ...], text: str) -> None:
    assert detailed_info(code, info) == f"[ {code} ] {text}"


def test_render_writes_the_log_under_the_home(tmp_path: Path) -> None:
    err = NitroCliError("E26", ("memory", "64", "256"), subaction="EIF needs more").add_subaction("Run")
    err.set_action("Run Enclave")
    text = err.render(tmp_path, now=AT, environ={})
    log = tmp_path / "log" / "err2026-01-02T03:04:05.123456+00:00.log"
    assert text == (
        f"{detailed_info('E26', ('memory', '64', '256'))}\n\nFor more details, please visit {HELP_URL}#E26"
        f'\n\nIf you open a support ticket, please provide the error log found at "{log}"'
    )
    assert log.read_text() == "Run Enclave: Run -> EIF needs more (nitro-cli 1.5.0, simulated)\n"
    assert err.exit_status == 26


def test_backtrace_shown_with_backtrace_1_and_no_log_when_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    text = NitroCliError("E36", subaction="app exited").render(blocker, now=AT, environ={"BACKTRACE": "1"})
    assert text.endswith("\n\nBacktrace:\n  nitro-cli: app exited (nitro-cli 1.5.0, simulated)")
    assert "support ticket" not in text


def test_logs_are_bounded_and_never_overwritten(tmp_path: Path) -> None:
    for _ in range(MAX_ERROR_LOGS + 5):
        NitroCliError("E11").render(tmp_path, now=AT, environ={})
    assert len(list((tmp_path / "log").iterdir())) == MAX_ERROR_LOGS


def test_unknown_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="E99"):
        NitroCliError("E99")
    assert NitroCliError("E00").exit_status == 1


def test_explain_texts() -> None:
    assert explain("E02") == (
        "CLI conflicting arguments. Such error appears when the Nitro CLI is supplied two contradicting "
        "arguments at the same time, such as `--cpu-count` and `--cpu-ids`.\nIn this case, only one of "
        "the parameters should be supplied."
    )
    assert explain("E57") == "No such error code E57"
    assert explain("bogus") == "No such error code bogus"
