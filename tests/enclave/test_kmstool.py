"""kmstool-enclave-cli: the real options and messages (the KMS path is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.kmstool import ATOI_MAX_DIGITS, FAILURE_STATUS, _atoi, main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["genrandom"], "--length must be set"),
        (["genrandom", "--length", "0"], "--length must be greater than 0"),
        (["genrandom", "--length", "abc"], "--length must be greater than 0"),
        (["genrandom", "--length", "-5"], "--length must be greater than 0"),
        (["genrandom", "--length", "1025"], "--length must be smaller or equal to 1024"),
        (["genrandom", "--bogus", "1"], "Unknown option: --bogus"),
        (["frobnicate"], "Unknown command"),
        (["decrypt", "--length", "1"], "Unknown option: --length"),
        (["decrypt"], "--ciphertext must be set"),
        (["genkey", "--key-spec", "AES-256"], "--key-id must be set"),
        (["genkey", "--key-id", "k"], "--key-spec must be set"),
        (["genkey", "--key-id", "k", "--key-spec", "AES_256"], "Unknown key spec: AES_256"),
        (["genkey", "--length", "3"], "Unknown option: --length"),
    ],
)
def test_argument_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # s_parse_options and the usage functions end in exit(1).
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[0].startswith(message)


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (
            ["decrypt", "--ciphertext", "not base64!"],
            ["Ciphertext not a base64 string", "Could not decrypt", ""],
        ),
        (
            ["decrypt", "--ciphertext", "AQI=", "--key-id", "k"],
            ["Invalid encryption algorithm", "Could not decrypt ciphertext", "Could not decrypt", ""],
        ),
        (
            ["decrypt", "--ciphertext", "AQI=", "--key-id", "k", "--encryption-algorithm", "X"],
            ["Invalid encryption algorithm", "Could not decrypt ciphertext", "Could not decrypt", ""],
        ),
    ],
    ids=["not-base64", "no-algorithm", "unknown-algorithm"],
)
def test_decrypt_checks_after_parsing_fail_as_main_does(
    args: list[str], lines: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Checked inside decrypt() and aws_kms_decrypt_blocking, not s_parse_options: main's fail_on prints
    # "Could not decrypt\n" with "%s\n" (an empty line follows) and returns AWS_OP_ERR, exit status 255.
    assert main(args) == FAILURE_STATUS == 255
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.split("\n") == [*lines, ""]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    # print_commands(1): the command list exits 1, with --help as without a command.
    assert main([flag]) == 1
    assert capsys.readouterr().err.startswith("usage: kmstool_enclave_cli [command]")
    assert main([]) == 1
    assert capsys.readouterr().err.startswith("usage: kmstool_enclave_cli [command]")


@pytest.mark.parametrize(
    ("command", "option"),
    [("decrypt", "--ciphertext CIPHERTEXT"), ("genkey", "--key-spec KEY_SPEC"), ("genrandom", "--length")],
)
def test_each_subcommand_has_its_usage(command: str, option: str, capsys: pytest.CaptureFixture[str]) -> None:
    # As the real tool: a subcommand's --help prints that subcommand's options and exits 1.
    assert main([command, "--help"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"usage: kmstool_enclave_cli {command} [options]")
    assert option in err
    assert "--proxy-port PORT" in err


def test_unreachable_proxy_fails_cleanly(
    sim_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No vsock-proxy listens on (3, 8999): no answer, so the SDK's status is -1; the cause, then the real
    # tool's lines (gen_random's fail_on, then main's with its empty line), exit status 255, no traceback.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDX")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setattr("enclave._documents.DocumentSource.take", lambda self: b"doc")
    monkeypatch.setattr("enclave._documents.DocumentSource.prefetch_next", lambda self: None)
    monkeypatch.setattr("enclave._retry.backoff_delay", lambda n, rand=None: 0.0)
    monkeypatch.setattr("enclave.kms.backoff_delay", lambda n, rand=None: 0.0)
    assert main(["genrandom", "--length", "32", "--proxy-port", "8999"]) == 255
    err = capsys.readouterr().err.split("\n")
    assert err[0].startswith("EndpointConnectionError: Could not connect to the endpoint URL")
    assert err[1:] == [
        "Got non-200 answer from KMS: -1",
        "Could not generate random bytes",
        "Could not generate random bytes",
        "",
        "",
    ]


@pytest.mark.parametrize(
    ("length", "message"),
    [
        ("1" * 5000, "--length must be smaller or equal to 1024"),  # int() refuses > 4300 digits
        ("-" + "9" * 5000, "--length must be greater than 0"),
        ("0" * 5000, "--length must be greater than 0"),
    ],
    ids=["huge", "huge-negative", "many-zeros"],
)
def test_length_of_thousands_of_digits_is_checked_not_a_traceback(
    length: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["genrandom", "--length", length]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [message]


def test_atoi_reads_leading_zeros_and_bounds_huge_values() -> None:
    assert _atoi("0" * 5000 + "32") == 32
    assert _atoi("7" * 5000) == 10**ATOI_MAX_DIGITS
    assert _atoi("-" + "7" * 5000) == -(10**ATOI_MAX_DIGITS)
    assert _atoi(" 12abc") == 12
