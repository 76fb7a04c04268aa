"""nitro-cli's JSON output: ``serde_json::to_string_pretty`` and the shapes of ``src/common/json_output.rs``.

- Pretty printing is 2-space indentation with ``": "`` after keys, ``[]``/``{}`` for empty containers and
  non-ASCII kept as UTF-8 (serde_json does not escape it); :func:`pretty` gives exactly that.
- Key order is the Rust struct's field order, so every builder here lists the keys in that order.
- ``MetadataDescribeInfo`` (``describe-enclaves --metadata``, ``describe-eif``) flattens the image's
  ``BuildMetadata`` and appends the keys of ``CustomMetadata`` (``#[serde(flatten)]``), skipped when null.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: The fields of ``EifBuildInfo`` (``BuildMetadata`` in the image) that describe output copies, in order.
_BUILD_FIELDS = ("BuildTime", "BuildTool", "BuildToolVersion", "OperatingSystem", "KernelVersion")


def pretty(value: object) -> str:
    """``value`` as serde_json's ``to_string_pretty`` prints it."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def metadata_describe_info(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``Metadata`` object of describe output from an EIF metadata section (``EifIdentityInfo``).

    None when the image has no metadata section or one that is not shaped like nitro-cli's (the real
    reader then has no metadata to show either).
    """
    if metadata is None:
        return None
    build = metadata.get("BuildMetadata")
    if not isinstance(build, Mapping) or not all(isinstance(build.get(k), str) for k in _BUILD_FIELDS):
        return None
    out: dict[str, Any] = {key: build[key] for key in _BUILD_FIELDS}
    out["DockerInfo"] = metadata.get("DockerInfo")
    custom = metadata.get("CustomMetadata")
    if isinstance(custom, Mapping):
        out.update(custom)
    return out


def image_identity(metadata: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """``(ImageName, ImageVersion)`` from an EIF metadata section, when it holds them as strings."""
    if metadata is None or metadata_describe_info(metadata) is None:
        return None, None
    name, version = metadata.get("ImageName"), metadata.get("ImageVersion")
    return (name if isinstance(name, str) else None, version if isinstance(version, str) else None)
