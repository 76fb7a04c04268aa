"""kmstool-enclave-cli: the real options and messages (the KMS path is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.kmstool import ATOI_MAX_DIGITS, _atoi, main


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
        (["decrypt", "--ciphertext", "not base64!"], "Ciphertext not a base64 string"),
        (["decrypt", "--ciphertext", "AQI=", "--key-id", "k"], "Invalid encryption algorithm"),
        (
            ["decrypt", "--ciphertext", "AQI=", "--key-id", "k", "--encryption-algorithm", "X"],
            "Invalid encryption",
        ),
        (["genkey", "--key-spec", "AES-256"], "--key-id must be set"),
        (["genkey", "--key-id", "k"], "--key-spec must be set"),
        (["genkey", "--key-id", "k", "--key-spec", "AES_256"], "Unknown key spec: AES_256"),
        (["genkey", "--length", "3"], "Unknown option: --length"),
    ],
)
def test_argument_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[0].startswith(message)


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "usage: kmstool_enclave_cli" in capsys.readouterr().err


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
    # No vsock-proxy listens on (3, 8999): a connection error, reported in two lines, no traceback.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDX")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setattr("enclave._documents.DocumentSource.take", lambda self: b"doc")
    monkeypatch.setattr("enclave._documents.DocumentSource.prefetch_next", lambda self: None)
    monkeypatch.setattr("enclave._retry.backoff_delay", lambda n, rand=None: 0.0)
    monkeypatch.setattr("enclave.kms.backoff_delay", lambda n, rand=None: 0.0)
    assert main(["genrandom", "--length", "32", "--proxy-port", "8999"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("EndpointConnectionError: Could not connect to the endpoint URL")
    assert err[-1] == "Could not generate random bytes"


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
