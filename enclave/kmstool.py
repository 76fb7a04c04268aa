"""``kmstool-enclave-cli``: the AWS enclave SDK's command-line tool: ``decrypt``, ``genkey``, ``genrandom``.

    kmstool-enclave-cli decrypt --ciphertext B64 [--key-id ID --encryption-algorithm ALG] [common options]
    kmstool-enclave-cli genkey --key-id ID --key-spec AES-256|AES-128 [common options]
    kmstool-enclave-cli genrandom --length N [common options]
    common options: [--region R] [--proxy-port P]
        [--aws-access-key-id ID --aws-secret-access-key KEY [--aws-session-token TOKEN]]

Options, defaults, output and messages as aws-nitro-enclaves-sdk-c ``bin/kmstool-enclave-cli/main.c`` and
``source/kms.c`` (aws-facts §6): region us-east-1, proxy port 8000 on the parent (CID 3); one usage text per
subcommand. Every KMS call is attested (a Recipient with this process's document; the plaintext is opened
here).

Exit statuses as the real tool's: a bad command line is ``exit(1)`` in ``s_parse_options`` and
``print_commands`` (the command list, a subcommand's usage after ``--help`` or after an option it does not
take, "Unknown option: ...", and every "must be set" check); anything that fails once the subcommand runs
makes ``main`` return ``AWS_OP_ERR`` (-1), exit status 255.

- ``decrypt``: "--ciphertext must be set" (1); the ciphertext is base64 ("Ciphertext not a base64 string",
  then "Could not decrypt" and an empty line, 255); Decrypt is sent with ``KeyId`` and
  ``EncryptionAlgorithm`` only when ``--key-id`` is given, and then the algorithm must be
  SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256 ("Invalid encryption algorithm", also when it
  is missing, as ``aws_kms_decrypt_blocking`` compares it unconditionally; then the failure lines, 255);
  ``PLAINTEXT: <base64>``; a failed call ends "Could not decrypt ciphertext", "Could not decrypt", "".
- ``genkey``: "--key-id must be set", "--key-spec must be set", "Unknown key spec: X" (then the usage; 1);
  GenerateDataKey with ``KeySpec`` AES_256 or AES_128; ``CIPHERTEXT: <base64>`` (the CiphertextBlob) then
  ``PLAINTEXT: <base64>``; a failed call ends "Could not generate data key" twice (``gen_datakey``, then
  ``main``, whose message ends in its own newline), then "".
- ``genrandom``: ``--length`` in 1..1024 checked before any call ("--length must be set", "--length must be
  greater than 0", "--length must be smaller or equal to 1024"; 1); ``PLAINTEXT: <base64>``; a failed call
  ends "Could not generate random bytes" twice, then "".

Before those closing lines come the SDK's own (``source/kms.c``): "Got non-200 answer from KMS: <status>"
when KMS answered an error (-1 when no answer came: the REST client returns no response), "Could not read
response from KMS" (decrypt; genkey and genrandom add ": 200") when a 200 answer is unusable, "Cannot
decrypt CMS encrypted content" when CiphertextForRecipient does not open. The first line of every failure
is this simulation's own: the cause, as the error's class and message (the AWS error name, a TLS hint;
never key material), where the real tool leaves its INFO logger to say what went wrong.

Differences, for the simulation: credential flags are optional (without them the SDK's usual chain is used,
which in simulation ends at kms-sim's credentials file), the session token is optional, the entropy pool is
seeded from the NSM only in a real enclave (a simulated one shares the host's kernel), and an unknown
subcommand says "Unknown command" before the command list.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Sequence

from attestation.errors import AttestationError, DecryptionError
from enclave import vsock
from enclave._entropy import seed_entropy
from enclave.errors import ClientError, EnclaveError, ResponseError, TransportError
from enclave.kms import MAX_NUMBER_OF_BYTES, KMSClient, client

__all__ = ["main"]

PROG = "kmstool_enclave_cli"
DEFAULT_REGION = "us-east-1"
#: The real tool seeds the kernel pool with 1024 NSM bytes at start ("relevant for TLS").
SEED_BYTES = 1024
#: Exit status of a bad command line: ``exit(1)`` in ``s_parse_options``, ``print_commands`` and the usages.
USAGE_STATUS = 1
#: Exit status of a failed subcommand: ``main`` returns ``AWS_OP_ERR`` (-1), whose low 8 bits are 255.
FAILURE_STATUS = 255
#: ``s_aws_nitro_enclaves_kms_client_call_blocking`` answers ``AWS_OP_ERR`` (-1) when no response came, and
#: the SDK prints it as the status of its "Got non-200 answer" line.
NO_RESPONSE_STATUS = -1
#: The closing lines of each subcommand's failure: its function's ``fail_on`` message, then ``main``'s,
#: printed as ``"%s\n"`` of a message that already ends in a newline (hence the empty line).
FAILURE_LINES = {
    "decrypt": ("Could not decrypt ciphertext", "Could not decrypt", ""),
    "genkey": ("Could not generate data key", "Could not generate data key", ""),
    "genrandom": ("Could not generate random bytes", "Could not generate random bytes", ""),
}
#: Digits of a numeric option read (a 64-bit value has at most 20); more are not read.
ATOI_MAX_DIGITS = 32

_COMMANDS = f"""usage: {PROG} [command]

 Commands:

    decrypt: Decrypt a given ciphertext blob.
    genkey: Generate a datakey from KMS encrypted with the given key id.
    genrandom: Generate a random byte string from KMS.
"""

_COMMON_USAGE = """
 Options:

    --help: Displays this message and exits
    --region REGION: AWS region to use for KMS. Default: 'us-east-1'
    --proxy-port PORT: Connect to KMS proxy on PORT. Default: 8000
    --aws-access-key-id ACCESS_KEY_ID: AWS access key ID
    --aws-secret-access-key SECRET_ACCESS_KEY: AWS secret access key
    --aws-session-token SESSION_TOKEN: Session token associated with the access key ID
"""

#: Each subcommand's own options (flag -> key) and the lines of its usage text.
_SUBCOMMANDS: dict[str, tuple[dict[str, str], str]] = {
    "decrypt": (
        {"--ciphertext": "ciphertext", "--key-id": "key_id", "--encryption-algorithm": "algorithm"},
        "    --ciphertext CIPHERTEXT: base64-encoded ciphertext that need to decrypt\n"
        "    --key-id KEY_ID: decrypt key id (for symmetric keys, is optional)\n"
        "    --encryption-algorithm ENCRYPTION_ALGORITHM: encryption algorithm for ciphertext\n",
    ),
    "genkey": (
        {"--key-id": "key_id", "--key-spec": "key_spec"},
        "    --key-id KEY_ID: key id\n"
        "    --key-spec KEY_SPEC: The key spec used to create the key (AES-256 or AES-128).\n",
    ),
    "genrandom": (
        {"--length": "length"},
        "    --length NO_OF_BYTES: The length of the random byte string\n",
    ),
}

_OPTIONS = {
    "--region": "region",
    "--proxy-port": "proxy_port",
    "--aws-access-key-id": "access_key",
    "--aws-secret-access-key": "secret_key",
    "--aws-session-token": "token",
}

#: genkey's ``--key-spec`` values and the GenerateDataKey ``KeySpec`` each is sent as (``source/kms.c``).
KEY_SPECS = {"AES-256": "AES_256", "AES-128": "AES_128"}
#: The ``EncryptionAlgorithm`` values ``aws_kms_decrypt_blocking`` accepts with a key id (``source/kms.c``).
DECRYPT_ALGORITHMS = ("SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256")


def _usage(command: str | None) -> str:
    if command not in _SUBCOMMANDS:
        return _COMMANDS
    return f"usage: {PROG} {command} [options]\n{_COMMON_USAGE}{_SUBCOMMANDS[command][1]}"


class _UsageError(Exception):
    """Bad command line (or ``--help``): the message, then the usage text (of ``command``, if known)."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


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
    if command not in _SUBCOMMANDS:
        raise _UsageError("Unknown command")
    options = _OPTIONS | _SUBCOMMANDS[command][0]
    values: dict[str, str] = {}
    while rest:
        option = rest.pop(0)
        if option in ("--help", "-h"):
            raise _UsageError("", command)
        name, eq, inline = option.partition("=")
        key = options.get(name)
        if key is None:
            raise _UsageError(f"Unknown option: {name}", command)
        if eq:
            values[key] = inline
        elif rest:
            values[key] = rest.pop(0)
        else:
            raise _UsageError(f"{name} requires an argument", command)
    if command == "genkey" and "key_spec" in values and values["key_spec"] not in KEY_SPECS:
        raise _UsageError(f"Unknown key spec: {values['key_spec']}", command)
    return command, values


def _client(values: dict[str, str]) -> KMSClient:
    """The tool's one KMS client (seeding the pool first in a real enclave, as the real tool does)."""
    if not vsock.is_simulated():
        seed_entropy(SEED_BYTES)
    return client(
        "kms",
        region_name=values.get("region", DEFAULT_REGION),
        aws_access_key_id=values.get("access_key"),
        aws_secret_access_key=values.get("secret_key"),
        aws_session_token=values.get("token"),
        proxy_port=_atoi(values.get("proxy_port", str(vsock.DEFAULT_PROXY_PORT))),
    )


def _sdk_lines(exc: BaseException, command: str) -> list[str]:
    """What ``source/kms.c`` prints for this failure of ``command``'s call (nothing for a cause it lacks)."""
    if isinstance(exc, ClientError | TransportError):
        status = NO_RESPONSE_STATUS
        if isinstance(exc, ClientError):
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", NO_RESPONSE_STATUS))
        lines = [f"Got non-200 answer from KMS: {status}"]
        # Only Decrypt's wrapper (aws_kms_decrypt_blocking_from_request) adds a line for a missing answer.
        return [*lines, "Could not read response from KMS"] if command == "decrypt" else lines
    if isinstance(exc, ResponseError):
        return ["Could not read response from KMS" + ("" if command == "decrypt" else ": 200")]
    if isinstance(exc, DecryptionError):
        return ["Cannot decrypt CMS encrypted content"]
    return []


def _failed(exc: BaseException, command: str) -> int:
    """A failed call: the cause, the SDK's lines and the tool's, exit status 255 (no traceback)."""
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    for line in (*_sdk_lines(exc, command), *FAILURE_LINES[command]):
        print(line, file=sys.stderr)
    return FAILURE_STATUS


#: What a KMS call may raise that the tool reports as a failure (one line each, no traceback).
_CALL_ERRORS = (EnclaveError, AttestationError, ValueError, OSError)


def _decrypt(values: dict[str, str]) -> int:
    if "ciphertext" not in values:
        print("--ciphertext must be set", file=sys.stderr)
        return USAGE_STATUS
    try:
        ciphertext = base64.b64decode(values["ciphertext"], validate=True)
    except (binascii.Error, ValueError):
        # decrypt() fails before its call: only main's message follows.
        for line in ("Ciphertext not a base64 string", *FAILURE_LINES["decrypt"][1:]):
            print(line, file=sys.stderr)
        return FAILURE_STATUS
    key_id = algorithm = None
    if "key_id" in values:
        if values.get("algorithm") not in DECRYPT_ALGORITHMS:
            for line in ("Invalid encryption algorithm", *FAILURE_LINES["decrypt"]):
                print(line, file=sys.stderr)
            return FAILURE_STATUS
        key_id, algorithm = values["key_id"], values["algorithm"]
    try:
        with _client(values) as kms:
            result = kms.decrypt(CiphertextBlob=ciphertext, KeyId=key_id, EncryptionAlgorithm=algorithm)
            plaintext = result["Plaintext"]
    except _CALL_ERRORS as exc:
        return _failed(exc, "decrypt")
    print(f"PLAINTEXT: {base64.b64encode(plaintext).decode()}")
    return 0


def _genkey(values: dict[str, str]) -> int:
    if "key_id" not in values:
        print("--key-id must be set", file=sys.stderr)
        return USAGE_STATUS
    if "key_spec" not in values:
        print("--key-spec must be set", file=sys.stderr)
        return USAGE_STATUS
    try:
        with _client(values) as kms:
            result = kms.generate_data_key(KeyId=values["key_id"], KeySpec=KEY_SPECS[values["key_spec"]])
    except _CALL_ERRORS as exc:
        return _failed(exc, "genkey")
    print(f"CIPHERTEXT: {base64.b64encode(result.get('CiphertextBlob', b'')).decode()}")
    print(f"PLAINTEXT: {base64.b64encode(result['Plaintext']).decode()}")
    return 0


def _genrandom(values: dict[str, str]) -> int:
    if "length" not in values:
        print("--length must be set", file=sys.stderr)
        return USAGE_STATUS
    length = _atoi(values["length"])
    if length <= 0:
        print("--length must be greater than 0", file=sys.stderr)
        return USAGE_STATUS
    if length > MAX_NUMBER_OF_BYTES:
        print(f"--length must be smaller or equal to {MAX_NUMBER_OF_BYTES}", file=sys.stderr)
        return USAGE_STATUS
    try:
        with _client(values) as kms:
            plaintext = kms.generate_random(NumberOfBytes=length)["Plaintext"]
    except _CALL_ERRORS as exc:
        return _failed(exc, "genrandom")
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
        print(_usage(exc.command), file=sys.stderr, end="")
        return USAGE_STATUS  # --help too: every usage text is printed by a function that calls exit(1)
    if command == "decrypt":
        return _decrypt(values)
    if command == "genkey":
        return _genkey(values)
    return _genrandom(values)


if __name__ == "__main__":
    sys.exit(main())
