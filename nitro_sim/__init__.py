"""nitro-sim: the simulated attested stack for tests and shells, started and stopped as one.

- :mod:`nitro_sim.procs`: the one module that starts, awaits and stops our programs (the demo, the
  benchmark, the integration tests, the pytest plugin and ``nitro-sim up`` use it).
- :mod:`nitro_sim.stack`: kms-sim, the parent's vsock-proxy, NSM devices and the SDK's KMS client as objects.
- :mod:`nitro_sim.enclaves`: enclave images and enclaves through our ``nitro-cli`` (build, run, terminate).
- :mod:`nitro_sim.pytest_plugin`: the fixtures (``kms_sim``, ``vsock_proxy``, ``nsm``, ``enclave_kms``,
  ``built_enclave``, ``running_enclave``, ...), registered through the ``pytest11`` entry point.
- ``nitro-sim up | status | down``: the same stack in the background, for a shell.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Credentials",
    "Enclave",
    "Image",
    "KmsSim",
    "Nsm",
    "ProcessError",
    "VsockProxy",
    "enclave_kms",
    "image_policy",
]
_HOMES = {"ProcessError": "nitro_sim.procs", "Enclave": "nitro_sim.enclaves", "Image": "nitro_sim.enclaves"}


def __getattr__(name: str) -> Any:
    """The exports, imported on first use: ``pytest`` loads the plugin (and so this package) in every run."""
    if name not in __all__:
        raise AttributeError(f"module 'nitro_sim' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES.get(name, "nitro_sim.stack")), name)
