"""`make demo`: the main job of the project, end to end (grows with each capability)."""

from __future__ import annotations

import sys


def main() -> int:
    print("attested-random: skeleton only; the attested flow lands with the attestation core.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
