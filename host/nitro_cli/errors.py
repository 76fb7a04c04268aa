"""nitro-cli's errors: codes E00-E60, their texts, the rendered message and the exit status.

Facts (aws-nitro-enclaves-cli ``src/common/document_errors.rs``, ``src/common/mod.rs``):

- Every failure carries one code ``E00``..``E60`` (``ERROR_CODES``) and a list of ``additional_info``
  strings that fill the code's template; a missing item is filled with ``MISSING_INFO``.
- The user sees ``[ E26 ] <filled template>``, a blank line, ``For more details, please visit
  https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#E26`` and, when the backtrace could be
  written to a log file, a blank line and ``If you open a support ticket, please provide the error log
  found at "<path>"`` (``construct_error_message``). With ``BACKTRACE=1`` the backtrace is shown too.
- The process exits with the code's number (``std::process::exit(err.error_code as i32)``): E26 exits 26.
  E00 is the one exception here: the real enum value 0 would exit "successfully", so we exit 1 (nitro-cli
  never raises E00; neither do we).

Simulation rules: the backtrace log goes to ``$NITRO_SIM_HOME/log/err<UTC RFC 3339>.log`` (never
``/var/log``), at most :data:`MAX_ERROR_LOGS` of them are kept (oldest removed first); the backtrace is our
own one-line chain ``<action>: <outer step> -> ... -> <root cause>`` plus the version. Nothing secret is put
into an error's info or subactions (callers pass paths, names and numbers only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from host.nitro_cli._error_texts import E19, E19_FILE_LINE, E26_EIF, E26_ZERO, NAMES, TEMPLATES

#: The version the simulation reports as nitro-cli's (Cargo.toml of the sources it follows).
NITRO_CLI_VERSION: Final = "1.5.0"
#: The documentation page the message points to (``construct_help_link``).
HELP_URL: Final = "https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html"
#: The placeholder for a template's missing ``additional_info`` item.
MISSING_INFO: Final = "MISSING_INFO"
#: The environment variable that shows the backtrace in the message (``BACKTRACE_VAR``), when "1".
ENV_BACKTRACE: Final = "BACKTRACE"
#: Error logs kept under ``$NITRO_SIM_HOME/log``; older ones are removed when a new one is written.
MAX_ERROR_LOGS: Final = 100
#: Longest text of one info item or subaction kept (a bound on what a message and a log can hold).
MAX_INFO_CHARS: Final = 4096
#: The log directory under the home.
LOG_DIR: Final = "log"


def is_known_code(code: str) -> bool:
    """True for the codes nitro-cli defines (``E00``..``E60``)."""
    return code in NAMES


def error_name(code: str) -> str:
    """The ``NitroCliErrorEnum`` variant name of ``code`` (e.g. ``InsufficientMemoryRequested``)."""
    return NAMES[code]


def detailed_info(code: str, info: Sequence[str]) -> str:
    """``[ CODE ] <template filled with info>``, as ``get_detailed_info`` builds it."""
    items = [*info, MISSING_INFO, MISSING_INFO, MISSING_INFO]
    if code == "E19":
        text = E19 + (E19_FILE_LINE.format(*items) if len(info) >= 2 else "")
    elif code == "E26":
        text = (E26_EIF if len(info) >= 3 else E26_ZERO).format(*items)
    elif code in TEMPLATES:
        text = TEMPLATES[code].format(*items)
    else:
        text = f"No such error code {code}"
    return f"[ {code} ] {text}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_INFO_CHARS else text[:MAX_INFO_CHARS] + "..."


class NitroCliError(Exception):
    """One nitro-cli failure: a code, the template's info, and the chain of steps that led to it.

    ``subaction`` is the root cause in words (nitro-cli's first ``add_subaction``); callers further out add
    their steps with :meth:`add_subaction` and the command name with :meth:`set_action`, as
    ``map_err(|e| e.add_subaction(..).set_action(..))`` does in the real tool.
    """

    code: str
    info: tuple[str, ...]
    action: str | None
    subactions: list[str]

    def __init__(
        self,
        code: str,
        info: Sequence[str] = (),
        *,
        subaction: str | None = None,
        action: str | None = None,
    ) -> None:
        if not is_known_code(code):
            raise ValueError(f"unknown nitro-cli error code {code!r}")
        self.code = code
        self.info = tuple(_clip(str(item)) for item in info)
        self.action = action
        self.subactions = [] if subaction is None else [_clip(subaction)]
        super().__init__(detailed_info(code, self.info))

    @property
    def exit_status(self) -> int:
        """The process exit status: the code's number (E26 -> 26); E00 -> 1 (see the module docstring)."""
        return int(self.code[1:]) or 1

    def add_subaction(self, text: str) -> NitroCliError:
        """Add an outer step to the chain (returns self, for ``raise err.add_subaction(..)``)."""
        self.subactions.append(_clip(text))
        return self

    def set_action(self, action: str) -> NitroCliError:
        """Name the command that failed (e.g. "Run Enclave"); returns self."""
        self.action = action
        return self

    def backtrace(self) -> str:
        """Our one-line chain: ``<action>: <outermost step> -> ... -> <root cause>``, then the version."""
        steps = " -> ".join(reversed(self.subactions)) or "(no detail)"
        return f"{self.action or 'nitro-cli'}: {steps} (nitro-cli {NITRO_CLI_VERSION}, simulated)"

    def render(
        self,
        home: Path,
        *,
        now: datetime | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> str:
        """nitro-cli's message for this error; writes the backtrace log under ``home/log`` when it can.

        ``now`` names the log file (default: the current UTC time); ``environ`` is read for ``BACKTRACE``.
        """
        env = os.environ if environ is None else environ
        text = f"{self}\n\nFor more details, please visit {HELP_URL}#{self.code}"
        trace = self.backtrace()
        if env.get(ENV_BACKTRACE) == "1":
            text += f"\n\nBacktrace:\n  {trace}"
        log_path = write_error_log(home, trace, now=now)
        if log_path is not None:
            text += f'\n\nIf you open a support ticket, please provide the error log found at "{log_path}"'
        return text


def write_error_log(home: Path, text: str, *, now: datetime | None = None) -> Path | None:
    """Write ``text`` to a new ``home/log/err<RFC 3339>.log``; None if it cannot (as the real tool shrugs).

    The name carries the UTC time as nitro-cli's does (``err{Utc::now().to_rfc3339()}.log``); a clash in
    the same microsecond gets a ``-N`` suffix. Keeps at most :data:`MAX_ERROR_LOGS` logs.
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC).isoformat()
    log_dir = home / LOG_DIR
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(MAX_ERROR_LOGS):
            path = log_dir / (f"err{stamp}.log" if attempt == 0 else f"err{stamp}-{attempt}.log")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            _prune_logs(log_dir)
            return path
    except OSError:
        return None
    return None


def _prune_logs(log_dir: Path) -> None:
    logs = sorted(p for p in log_dir.glob("err*.log") if p.is_file())
    for old in logs[: max(0, len(logs) - MAX_ERROR_LOGS)]:
        old.unlink(missing_ok=True)


def explain(code: str) -> str:
    """The text ``nitro-cli explain --error-code CODE`` prints (to stderr), from ``explain_error``.

    Its table has no entry for E57, E58 and E59 (they print "No such error code ..."), as in the real tool.
    """
    from host.nitro_cli._explain import explain_text  # noqa: PLC0415 (the long texts load only here)

    return explain_text(code)


class SimConfigError(Exception):
    """The simulation's own settings (``NITRO_SIM_*``) are unusable: not a nitro-cli error code.

    The CLI prints ``nitro-cli: error: <message>`` and exits 1.
    """
