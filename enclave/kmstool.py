"""``kmstool-enclave-cli``: the AWS enclave SDK's command-line tool, ``genrandom`` subcommand.

    kmstool-enclave-cli genrandom --length N [--region R] [--proxy-port P]
        [--aws-access-key-id ID --aws-secret-access-key KEY [--aws-session-token TOKEN]]

Options, defaults, output and messages as aws-nitro-enclaves-sdk-c ``bin/kmstool-enclave-cli/main.c``
(aws-facts §6): region us-east-1, proxy port 8000 on the parent (CID 3), ``--length`` in 1..1024 checked
before any call ("--length must be set", "--length must be greater than 0", "--length must be smaller or
equal to 1024"), ``PLAINTEXT: <base64>`` on stdout, "Could not generate random bytes" on stderr and exit
status 1 on failure (preceded by one line naming the cause).

Differences, for the simulation: credential flags are optional (without them the SDK's usual chain is used,
which in simulation ends at kms-sim's credentials file), the session token is optional, and the entropy
pool is seeded from the NSM only in a real enclave (a simulated one shares the host's kernel). ``decrypt``
and ``genkey`` are recognised and refused with a clear message: kms-sim serves GenerateRandom.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Sequence

from attestation.errors import AttestationError
from enclave import vsock
from enclave._entropy import seed_entropy
from enclave.errors import EnclaveError
from enclave.kms import MAX_NUMBER_OF_BYTES, client

__all__ = ["main"]

PROG = "kmstool_enclave_cli"
DEFAULT_REGION = "us-east-1"
#: The real tool seeds the kernel pool with 1024 NSM bytes at start ("relevant for TLS").
SEED_BYTES = 1024
#: Digits of a numeric option read (a 64-bit value has at most 20); more are not read.
ATOI_MAX_DIGITS = 32

_USAGE = f"""usage: {PROG} <command> [options]

 Commands:

    genrandom: Generate random bytes from KMS (attested: only this enclave can read them)
    decrypt: Decrypt a ciphertext (not served by the simulation)
    genkey: Generate a data key (not served by the simulation)

 Options:

    --region REGION: AWS region to use for KMS
    --proxy-port PORT: Connect to KMS proxy on PORT. Default: 8000
    --aws-access-key-id ACCESS_KEY_ID: AWS access key ID
    --aws-secret-access-key SECRET_ACCESS_KEY: AWS secret access key
    --aws-session-token SESSION_TOKEN: Session token associated with the access key ID
    --length LENGTH: The number of random bytes to generate (genrandom)
    --help: Display this message and exit
"""

_OPTIONS = {
    "--region": "region",
    "--proxy-port": "proxy_port",
    "--aws-access-key-id": "access_key",
    "--aws-secret-access-key": "secret_key",
    "--aws-session-token": "token",
    "--length": "length",
}


class _UsageError(Exception):
    """Bad command line: the message, then the usage text, exit 1."""


def _atoi(text: str) -> int:
    """C ``atoi``: optional sign and leading digits, 0 if none (so "abc" is 0, as in the real tool)."""
    text = text.strip()
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    count = 0
    while count < len(digits) and digits[count].isascii() and digits[count].isdigit():
        count += 1
    # C's atoi is undefined past INT_MAX; Python's int() refuses over 4300 digits (ValueError, a
    # traceback here). A value of over ATOI_MAX_DIGITS significant digits is out of every range checked
    # anyway, so it reads as 10**ATOI_MAX_DIGITS.
    significant = digits[:count].lstrip("0")
    if len(significant) > ATOI_MAX_DIGITS:
        return sign * int(10**ATOI_MAX_DIGITS)
    return sign * int(significant) if significant else 0


def _parse(argv: Sequence[str]) -> tuple[str, dict[str, str]]:
    if not argv:
        raise _UsageError("")
    command, rest = argv[0], list(argv[1:])
    if command in ("--help", "-h"):
        raise _UsageError("")
    values: dict[str, str] = {}
    while rest:
        option = rest.pop(0)
        if option in ("--help", "-h"):
            raise _UsageError("")
        name, eq, inline = option.partition("=")
        key = _OPTIONS.get(name)
        if key is None:
            raise _UsageError("Unknown option")
        if eq:
            values[key] = inline
        elif rest:
            values[key] = rest.pop(0)
        else:
            raise _UsageError(f"{name} requires an argument")
    return command, values


def _genrandom(values: dict[str, str]) -> int:
    if "length" not in values:
        print("--length must be set", file=sys.stderr)
        return 1
    length = _atoi(values["length"])
    if length <= 0:
        print("--length must be greater than 0", file=sys.stderr)
        return 1
    if length > MAX_NUMBER_OF_BYTES:
        print(f"--length must be smaller or equal to {MAX_NUMBER_OF_BYTES}", file=sys.stderr)
        return 1
    proxy_port = _atoi(values.get("proxy_port", str(vsock.DEFAULT_PROXY_PORT)))
    try:
        if not vsock.is_simulated():
            seed_entropy(SEED_BYTES)
        with client(
            "kms",
            region_name=values.get("region", DEFAULT_REGION),
            aws_access_key_id=values.get("access_key"),
            aws_secret_access_key=values.get("secret_key"),
            aws_session_token=values.get("token"),
            proxy_port=proxy_port,
        ) as kms:
            plaintext = kms.generate_random(NumberOfBytes=length)["Plaintext"]
    except (EnclaveError, AttestationError, ValueError, OSError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        print("Could not generate random bytes", file=sys.stderr)
        return 1
    print(f"PLAINTEXT: {base64.b64encode(plaintext).decode()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kmstool-enclave-cli``; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        command, values = _parse(args)
    except _UsageError as exc:
        if str(exc):
            print(exc, file=sys.stderr)
        print(_USAGE, file=sys.stderr, end="")
        return 0 if not str(exc) and args and args[0] in ("--help", "-h") else 1
    if command == "genrandom":
        return _genrandom(values)
    if command in ("decrypt", "genkey"):
        print(
            f"{command} is not supported by this simulation (kms-sim serves GenerateRandom)", file=sys.stderr
        )
        return 1
    print("Unknown command", file=sys.stderr)
    print(_USAGE, file=sys.stderr, end="")
    return 1


if __name__ == "__main__":
    sys.exit(main())
