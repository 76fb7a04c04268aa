"""The demo enclave app's command line: bad arguments are one usage line, never a traceback."""

from __future__ import annotations

import pytest

from enclave.app import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bytes", "0"], "--bytes must be in 1..1024"),
        (["--bytes", "1025"], "--bytes must be in 1..1024"),
        (["--proxy-port", "-1"], "invalid vsock_port value"),
        (["--proxy-port", "99999999999"], "invalid vsock_port value"),
        (["--region", "bad region!"], "invalid region name"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_missing_nsm_is_one_json_line(
    monkeypatch: pytest.MonkeyPatch, sim_home: object, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NITRO_SIM_NSM", "/nonexistent/nsm.sock")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert main([]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert '"error": "NSMDeviceError"' in out


def test_missing_credentials_is_one_json_line(
    monkeypatch: pytest.MonkeyPatch, sim_home: object, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NITRO_SIM_NSM", "/nonexistent/nsm.sock")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    assert main([]) == 1
    assert '"error": "CredentialsError"' in capsys.readouterr().out
