"""The texts of ``nitro-cli explain --error-code CODE`` (aws-nitro-enclaves-cli ``explain_error`` in
``src/common/document_errors.rs``), kept verbatim because users and scripts compare them.

The real table has no entries for E57, E58 and E59: for those, and for any unknown code, it prints
``No such error code <code>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from host.nitro_cli._error_texts import TEMPLATES

#: Codes whose explanation is word for word their error message's text (the real table repeats them).
_SAME_AS_MESSAGE: Final = (
    "E00",
    "E07",
    "E08",
    "E09",
    "E10",
    "E11",
    "E12",
    "E13",
    "E14",
    "E15",
    "E16",
    "E17",
    "E18",
    "E23",
    "E25",
    "E28",
    "E29",
    "E30",
    "E31",
    "E32",
    "E33",
    "E34",
    "E35",
    "E36",
    "E37",
    "E38",
    "E39",
    "E40",
    "E41",
    "E42",
    "E43",
    "E44",
    "E45",
    "E46",
    "E47",
    "E48",
    "E49",
    "E50",
    "E51",
    "E52",
    "E53",
    "E54",
    "E55",
    "E56",
    "E60",
)
#: The explanations that differ from the message text (the templated messages, and a few reworded ones).
_OWN: Final[Mapping[str, str]] = {
    "E01": (
        "Missing mandatory argument. Such error appears when the Nitro CLI is requested to perform an "
        "operation, but not all of the mandatory arguments were supplied.\n\tExample: `nitro-cli "
        "run-enclave --cpu-count 2 --eif-path /path/to/my/eif`. Note that in this case, the mandatory "
        "parameter `--memory` is missing a value."
    ),
    "E02": (
        "CLI conflicting arguments. Such error appears when the Nitro CLI is supplied two contradicting "
        "arguments at the same time, such as `--cpu-count` and `--cpu-ids`.\nIn this case, only one of "
        "the parameters should be supplied."
    ),
    "E03": (
        "Invalid argument provided. Such error appears when the type of at least one of the arguments "
        "provided to the Nitro CLI does not match the expected type of that parameter.\n\tExample: "
        "`nitro-cli run-enclave --cpu-count 1z --memory 80 --eif-path /path/to/my/eif`. In this case, "
        "`cpu-count` is not a valid integer value."
    ),
    "E04": (
        "Socket pair creation failure. Such error apears when the Nitro CLI process attempts to open a "
        "stream pair in order to send a command to the enclave process, but the stream initialization "
        "fails."
    ),
    "E05": (
        "Process spawn failure. Such error appears when the main Nitro CLI process failed to spawn the "
        "enclave process, in order to complete a `run-enclave` command."
    ),
    "E06": (
        "Daemonize process failure. Such error appears when the system fails to daemonize the newly "
        "spawned enclave process."
    ),
    "E19": (
        "File operation failure. Such error appears when the system fails to perform the requested file "
        "operations, such as opening the EIF file when launching an enclave, or seeking to a specific "
        "offset in the EIF file, or writing to the log file."
    ),
    "E20": (
        "Invalid CPU configuration. Such error appears when the user supplies the same CPU ID multiple "
        "times.\n\tExample: `nitro-cli run-enclave --cpu-ids 1 1 --memory 80 --eif-path /path/to/my/eif`. "
        "In this case, CPU ID `1` has been selected twice."
    ),
    "E21": (
        "No such CPU available in the pool. Such error appears when the user requests to run an enclave "
        "with at least one CPU ID which does not exist in the CPU pool.\n\tExample: (configured CPU pool: "
        "[1,9]) `nitro-cli run-enclave --cpu-ids 1 2 --memory 80 --eif-path /path/to/my/eif`. In this "
        "case, CPU 2 is not in the configured CPU pool."
    ),
    "E22": (
        "Insufficient CPUs available in the pool. Such error appears when the user requests to run an "
        "enclave with more CPUs that available in the CPU pool.\n\tExample: (configured CPU pool: [1,9]) "
        "`nitro-cli run-enclave --cpu-count 4 --memory 80 --eif-path /path/to/my/eif`. In this case, the "
        "user requested 4 CPUs, but the CPU pool contains only 2."
    ),
    "E24": "CPU error. Such error appears when a CPU line interval is invalid (as in 0-3-7)",
    "E26": (
        "Insufficient memory requested. Such error appears when the user requests to launch an enclave "
        "with not enough memory. The enclave memory should be at least equal to the size of the EIF file "
        "used for launching the enclave.\n\tExample: (EIF file size: 11MB) `nitro-cli run-enclave "
        "--cpu-count 2 --memory 5 --eif-path /path/to/my/eif`. In this case, the user requested to run "
        "an enclave with only 5MB of memory, whereas the EIF file alone requires 11MB."
    ),
    "E27": (
        "Insufficient memory available. Such error appears when the user requests to launch an enclave "
        "with more memory than available. The enclave memory should be at most equal to the size of the "
        "configured hugepage memory.\n\tExample: (previously configured 80MB of hugepage memory) "
        "`nitro-cli run-enclave --cpu-count 2 --memory 100 --eif-path /path/to/my/eif`. In this case, "
        "the user requested to run an enclave with 100MB of memory, whereas the system has only 80MB "
        "available for enclaves. As a solution, (re)configure the Nitro Enclaves environment, specifying "
        "a higher value for the available memory."
    ),
}
_EXPLAIN: Final[Mapping[str, str]] = dict(
    sorted({**{code: TEMPLATES[code] for code in _SAME_AS_MESSAGE}, **_OWN}.items())
)


def explain_text(code: str) -> str:
    """The explanation of ``code``, or "No such error code CODE"."""
    return _EXPLAIN.get(code, f"No such error code {code}")
