"""Our programs as argv, and the environment they run in (the rules are :mod:`nitro_sim.procs`'s)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from attestation.sim import ENV_HOME
from nitro_sim.procs import ProcessError

__all__ = ["child_environment", "program"]


def program(name: str) -> list[str]:
    """The argv prefix of one of our console scripts: beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found is None:
        raise ProcessError(f"{name} not found (beside {sys.executable} or on PATH): install attested-random")
    return [found]


def child_environment(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without AWS_* and NITRO_SIM_* settings, pointed at ``home``."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith(("AWS_", "NITRO_SIM_"))}
    env[ENV_HOME] = str(home)
    return env
