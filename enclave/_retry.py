"""Retries as botocore's "standard" mode does (botocore ``retries/standard.py``; AWS SDKs reference guide,
"Retry behavior"), as pure functions and one small quota object.

- At most ``Config.max_attempts`` attempts in all, first try included (default 3).
- Retried: connection errors and timeouts; HTTP 500, 502, 503 and 504; the transient and throttling error
  codes below (throttling arrives as HTTP 400, e.g. KMS's ``ThrottlingException``). Never another 4xx.
- Delay before retry ``n`` (1-based): ``random() * min(20 s, 2 ** (n - 1))`` (exponential, full jitter).
- A retry quota (token bucket of 500; a retry costs 5, or 10 after a timeout; a success without retry
  refunds 1 and a success after retries refunds the cost) stops retry storms when the service is down.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "MAX_ATTEMPTS_LIMIT",
    "RetryQuota",
    "backoff_delay",
    "is_retryable_response",
]

DEFAULT_MAX_ATTEMPTS = 3
#: Bound on the configurable number of attempts in all.
MAX_ATTEMPTS_LIMIT = 20
#: ``MAX_BACKOFF`` in botocore standard mode (seconds).
MAX_BACKOFF_SECONDS = 20.0
#: Retry quota, as botocore's ``RetryQuota`` and ``standard.py`` constants.
INITIAL_RETRY_TOKENS = 500
RETRY_COST = 5
TIMEOUT_RETRY_COST = 10
NO_RETRY_INCREMENT = 1

#: botocore ``standard.py`` ``_TRANSIENT_STATUS_CODES``.
TRANSIENT_STATUS_CODES = frozenset({500, 502, 503, 504})
#: botocore ``_TRANSIENT_ERROR_CODES``.
TRANSIENT_ERROR_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
#: botocore ``_THROTTLED_ERROR_CODES``.
THROTTLING_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)


def is_retryable_response(status: int, code: str | None) -> bool:
    """Whether an HTTP error answer is retried: 5xx transient statuses, transient or throttling codes."""
    if code is not None and (code in THROTTLING_ERROR_CODES or code in TRANSIENT_ERROR_CODES):
        return True
    return status in TRANSIENT_STATUS_CODES


def backoff_delay(retry_number: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
    return rand() * min(MAX_BACKOFF_SECONDS, 2.0 ** (retry_number - 1))


class RetryQuota:
    """The standard mode's shared retry budget (one per client)."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: int = INITIAL_RETRY_TOKENS) -> None:
        self._tokens = tokens

    @property
    def available(self) -> int:
        """Tokens left."""
        return self._tokens

    def acquire(self, *, timeout: bool) -> int:
        """Take the cost of one retry; return it, or 0 when the quota is exhausted (then do not retry)."""
        cost = TIMEOUT_RETRY_COST if timeout else RETRY_COST
        if cost > self._tokens:
            return 0
        self._tokens -= cost
        return cost

    def release(self, cost: int) -> None:
        """A request succeeded: refund ``cost`` (what its retries took), or the small no-retry increment."""
        self._tokens = min(INITIAL_RETRY_TOKENS, self._tokens + (cost or NO_RETRY_INCREMENT))
