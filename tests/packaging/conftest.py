"""Fixtures of tests/packaging: the wheel built once per session, and a user's environment with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from wheel_user import (
    USER_SUITE_SUMMARIES,
    USER_TEST_REQUIREMENTS,
    BuiltWheel,
    build_wheel,
    copy_source,
    new_venv,
    pip_install,
)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> BuiltWheel:
    """``pip wheel --no-deps`` of a clean copy of this tree."""
    return build_wheel(copy_source(tmp_path_factory.mktemp("source")), tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def user_venv(tmp_path_factory: pytest.TempPathFactory, built_wheel: BuiltWheel) -> Path:
    """A fresh virtual environment with only the wheel (and its dependencies), pytest and boto3."""
    venv = new_venv(tmp_path_factory.mktemp("user") / "venv")
    pip_install(venv, str(built_wheel.path), *USER_TEST_REQUIREMENTS)
    return venv


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The user suites' own counts, so they show in this run's output (each is one test here)."""
    for name, counts in USER_SUITE_SUMMARIES:
        terminalreporter.write_line(f"{name}, as a user's CI runs it (fresh venv, built wheel): {counts}")
