"""``python -m host.nitro_cli``: the same as the ``nitro-cli`` script."""

from __future__ import annotations

import sys

from host.nitro_cli.cli import main

sys.exit(main())
