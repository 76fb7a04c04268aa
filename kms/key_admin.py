"""Key management: CreateKey, DescribeKey, ListKeys, aliases, key policies, Enable/Disable, deletion."""

from __future__ import annotations

from collections.abc import Mapping

from kms._op import Operation

__all__ = ["KEY_OPERATIONS"]

KEY_OPERATIONS: Mapping[str, Operation] = {}
