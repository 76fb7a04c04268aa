"""The simulated ``nitro-cli``: the real tool's command line, JSON and errors, enclaves as local processes.

Entry point: :func:`host.nitro_cli.cli.main` (the ``nitro-cli`` script). Errors: :mod:`host.nitro_cli.errors`.
"""

from __future__ import annotations

from host.nitro_cli.errors import NitroCliError

__all__ = ["NitroCliError"]
