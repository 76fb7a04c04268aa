"""Standard-mode retry rules (botocore retries/standard.py)."""

from __future__ import annotations

import pytest

from enclave._retry import RetryQuota, backoff_delay, is_retryable_response


@pytest.mark.parametrize(
    ("status", "code", "retry"),
    [
        (500, "KMSInternalException", True),
        (500, "DependencyTimeoutException", True),
        (503, None, True),
        (504, "500", True),
        (400, "ThrottlingException", True),
        (400, "AccessDeniedException", False),
        (400, "ValidationException", False),
        (403, "UnrecognizedClientException", False),
        (404, "NotFoundException", False),
        (501, "NotImplemented", False),
    ],
)
def test_classification(status: int, code: str | None, retry: bool) -> None:
    assert is_retryable_response(status, code) is retry


def test_backoff_is_full_jitter_capped() -> None:
    assert backoff_delay(1, lambda: 1.0) == 1.0
    assert backoff_delay(3, lambda: 1.0) == 4.0
    assert backoff_delay(30, lambda: 1.0) == 20.0
    assert backoff_delay(2, lambda: 0.0) == 0.0


def test_quota_drains_and_refills() -> None:
    quota = RetryQuota(tokens=12)
    assert quota.acquire(timeout=False) == 5
    assert quota.acquire(timeout=True) == 0  # 10 > 7 left
    assert quota.acquire(timeout=False) == 5
    assert quota.acquire(timeout=False) == 0
    quota.release(10)
    assert quota.available == 12
    quota.release(0)
    assert quota.available == 13
