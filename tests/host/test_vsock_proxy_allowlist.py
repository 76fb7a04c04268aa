"""The allowlist check: real file, real messages, and no DNS lookup of any name outside this machine."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from host._allowlist import MAX_RESOLVED_ENTRIES, AllowlistError, check_allowlist, system_resolve


def _no_dns(host: str, family: int) -> list[str]:
    raise AssertionError(f"resolver called for {host!r}")


def test_shipped_file_loads_and_refuses_other_port_without_dns(vectors: Path) -> None:
    shipped = vectors / "vsock-proxy" / "vsock-proxy.yaml"
    # Every shipped entry is port 443, so port 8443 is refused before any name would be resolved.
    with pytest.raises(AllowlistError, match=r"^The given address and port are not allowed$"):
        check_allowlist("kms.us-east-1.amazonaws.com", 8443, shipped, resolve=_no_dns)


def test_shipped_file_exact_name_match(vectors: Path) -> None:
    shipped = vectors / "vsock-proxy" / "vsock-proxy.yaml"
    asked: list[str] = []

    def fake(host: str, family: int) -> list[str]:
        # Stands in for DNS so that no amazonaws.com name is ever looked up here.
        asked.append(host)
        return ["192.0.2.10"] if host == "kms.us-east-1.amazonaws.com" else ["198.51.100.7"]

    ip = check_allowlist("kms.us-east-1.amazonaws.com", 443, shipped, resolve=fake)
    assert ip == "192.0.2.10"
    # An exact name match is found before any entry is resolved: only the remote itself is looked up.
    assert asked == ["kms.us-east-1.amazonaws.com"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "allow.yaml"
    path.write_text(text)
    return path


def test_loopback_allowlist_by_name_and_by_ip(tmp_path: Path) -> None:
    allow = _write(
        tmp_path, "allowlist:\n- {address: 127.0.0.1, port: 9443}\n- {address: localhost, port: 9444}\n"
    )
    assert check_allowlist("127.0.0.1", 9443, allow) == "127.0.0.1"
    # "localhost" is not the entry's string for 9443, so the entry and the remote are compared by IP.
    assert check_allowlist("localhost", 9443, allow, family=socket.AF_INET) == "127.0.0.1"
    assert check_allowlist("localhost", 9444, allow, family=socket.AF_INET) == "127.0.0.1"
    with pytest.raises(AllowlistError, match="not allowed"):
        check_allowlist("127.0.0.1", 9445, allow)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("allowlist: [\n", "Bad yaml format"),
        ("services: []\n", "No allowlist field"),
        ("- just a list\n", "No allowlist field"),
        ("allowlist:\n- {port: 443}\n", "No address field"),
        ("allowlist:\n- {address: 127.0.0.1, port: '443'}\n", "No port field or invalid type"),
        ("allowlist:\n- {address: 127.0.0.1}\n", "No port field or invalid type"),
        ("allowlist: []\n", "The given address and port are not allowed"),
    ],
    ids=["bad-yaml", "no-allowlist", "not-a-map", "no-address", "port-string", "no-port", "empty"],
)
def test_file_errors_have_real_messages(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AllowlistError) as info:
        check_allowlist("127.0.0.1", 443, _write(tmp_path, text), resolve=_no_dns)
    assert str(info.value) == message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AllowlistError, match=r"^Could not open the file$"):
        check_allowlist("127.0.0.1", 443, tmp_path / "absent.yaml")


def test_system_resolve_literal() -> None:
    assert system_resolve("127.0.0.1", socket.AF_INET) == ["127.0.0.1"]


def test_resolution_is_bounded_and_refused_before_any_lookup(tmp_path: Path) -> None:
    # Loopback names only: "localhost" entries never equal the remote 127.0.0.2, so each needs a lookup.
    over = _write(tmp_path, "allowlist:\n" + "- {address: localhost, port: 9}\n" * (MAX_RESOLVED_ENTRIES + 1))
    with pytest.raises(
        AllowlistError,
        match=rf"^Too many allowlist entries to resolve for port 9: "
        rf"{MAX_RESOLVED_ENTRIES + 1} \(at most {MAX_RESOLVED_ENTRIES}\)$",
    ):
        check_allowlist("127.0.0.2", 9, over, resolve=_no_dns)
    # Other ports' entries do not count; at the bound the real system resolver is used (localhost only).
    at = _write(
        tmp_path,
        "allowlist:\n"
        + "- {address: localhost, port: 9}\n" * MAX_RESOLVED_ENTRIES
        + "- {address: localhost, port: 10}\n",
    )
    with pytest.raises(AllowlistError, match=r"^The given address and port are not allowed$"):
        check_allowlist("127.0.0.2", 9, at, family=socket.AF_INET)


def test_two_passes_keep_the_real_outcome(tmp_path: Path) -> None:
    asked: list[str] = []

    def loopback(host: str, family: int) -> list[str]:
        asked.append(host)
        return {"localhost": ["127.0.0.1"], "127.0.0.1": ["127.0.0.1"]}.get(host, ["127.0.0.3"])

    # An exact name anywhere before a malformed entry wins without resolving the entries before it.
    named = _write(
        tmp_path,
        "allowlist:\n- {address: localhost, port: 9}\n- {address: 127.0.0.1, port: 9}\n- {port: 9}\n",
    )
    assert check_allowlist("127.0.0.1", 9, named, resolve=loopback) == "127.0.0.1"
    assert asked == ["127.0.0.1"]
    # A match by IP before a malformed entry accepts, as the real in-order loop does.
    by_ip = _write(tmp_path, "allowlist:\n- {address: localhost, port: 9}\n- {port: 9}\n")
    assert check_allowlist("127.0.0.1", 9, by_ip, resolve=loopback) == "127.0.0.1"
    # A match only after the malformed entry is not reached: the malformed entry's error.
    after = _write(
        tmp_path, "allowlist:\n- {address: other, port: 9}\n- {port: 9}\n- {address: 127.0.0.1, port: 9}\n"
    )
    with pytest.raises(AllowlistError, match=r"^No address field$"):
        check_allowlist("127.0.0.1", 9, after, resolve=loopback)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("allowlist: " + "[" * 5000 + "]" * 5000 + "\n", "Bad yaml format"),
        ("allowlist: [{address: 127.0.0.1, port: 9}]\nx: !!timestamp 2001-13-45\n", "Bad yaml format"),
        ("allowlist:\n- {address: 127.0.0.1, port: " + "9" * 5000 + "}\n", "Bad yaml format"),
        (
            "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nallowlist: [*b]\n",
            "No address field",
        ),
        ("allowlist: !!python/object/apply:os.system ['true']\n", "Bad yaml format"),
    ],
    ids=["deep-nesting", "explicit-bad-timestamp", "integer-past-int-limit", "alias-fan-out", "python-tag"],
)
def test_hostile_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    # Before the fix the first three escaped as RecursionError / ValueError tracebacks.
    with pytest.raises(AllowlistError) as info:
        check_allowlist("127.0.0.1", 9, _write(tmp_path, text), resolve=_no_dns)
    assert str(info.value) == message


@pytest.mark.parametrize("date", ["2001-13-45", "2001-02-30", "2001-02-03"])
def test_date_shaped_strings_are_strings_as_in_the_real_proxy(tmp_path: Path, date: str) -> None:
    # yaml-rust (YAML 1.2 core) has no timestamps; PyYAML's implicit ones raised ValueError on a bad date.
    text = f"allowlist:\n- {{address: {date}, port: 9}}\n- {{address: 127.0.0.1, port: 9}}\nnote: {date}\n"
    asked: list[str] = []

    def loopback(host: str, family: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.3"] if host == date else ["127.0.0.1"]

    assert check_allowlist("127.0.0.1", 9, _write(tmp_path, text), resolve=loopback) == "127.0.0.1"
    assert asked == ["127.0.0.1"]  # the exact match wins in the first pass: the date entry was a string


def test_a_name_with_a_nul_does_not_resolve() -> None:
    # getaddrinfo would resolve "127.0.0.1\0anything" as 127.0.0.1 (the C string ends at the NUL).
    with pytest.raises(AllowlistError, match=r"^DNS lookup failed!$"):
        system_resolve("127.0.0.1\0.example", socket.AF_INET)


def test_an_entry_with_a_nul_is_not_the_name_before_it(tmp_path: Path) -> None:
    allow = _write(tmp_path, 'allowlist:\n- {address: "127.0.0.1\\0.example", port: 9}\n')
    with pytest.raises(AllowlistError, match=r"^The given address and port are not allowed$"):
        check_allowlist("127.0.0.1", 9, allow)
