"""nitro-sim: the simulated attested stack for tests and shells, started and stopped as one.

- :mod:`nitro_sim.procs`: the one module that starts, awaits and stops our programs (the demo, the
  benchmark, the integration tests, the pytest plugin and ``nitro-sim up`` use it).
- :mod:`nitro_sim.stack`: kms-sim, the parent's vsock-proxy, NSM devices and the SDK's KMS client as objects.
- :mod:`nitro_sim.pytest_plugin`: the fixtures (``kms_sim``, ``vsock_proxy``, ``nsm``, ``enclave_kms``, ...),
  registered through the ``pytest11`` entry point.
- ``nitro-sim up | status | down``: the same stack in the background, for a shell.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Credentials", "KmsSim", "Nsm", "ProcessError", "VsockProxy", "enclave_kms", "image_policy"]


def __getattr__(name: str) -> Any:
    """The exports, imported on first use: ``pytest`` loads the plugin (and so this package) in every run."""
    if name not in __all__:
        raise AttributeError(f"module 'nitro_sim' has no attribute {name!r}")
    module = "nitro_sim.procs" if name == "ProcessError" else "nitro_sim.stack"
    return getattr(importlib.import_module(module), name)
