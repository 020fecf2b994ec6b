"""When to retry, and how long to wait: pure rules, no I/O.

A request is retried only when replaying it could succeed and is safe: the
answer was 408, 429 or a 5xx (not 501), or the connection failed; and the
request body can be sent again. Delays grow exponentially with full jitter
(so a fleet of clients does not retry in lockstep) and a server's
``Retry-After`` wins when it asks for longer, up to a cap.
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

from ..config import RetryPolicy
from ..errors import AsyncregError, RegistryError, TransportError

__all__ = [
    "REFUSED_MONOLITHIC",
    "RETRYABLE_STATUS",
    "backoff_delay",
    "is_retryable",
    "parse_retry_after",
    "refuses_monolithic",
    "retry_after_of",
    "retry_delay",
]

#: Statuses after which a replay may succeed (RFC 9110 sections 15.5.9, 15.6; RFC 6585 section 4).
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

#: Statuses with which a registry refuses a monolithic upload PUT ("not like that"):
#: 405 Method Not Allowed, 413 Content Too Large, 501 Not Implemented. The
#: distribution spec's chunked flow (end-5 PATCH, end-6 PUT) is the way around.
REFUSED_MONOLITHIC = frozenset({405, 413, 501})


def is_retryable(exc: BaseException) -> bool:
    """The one rule, shared by every byte path, for "trying again may succeed".

    A registry answer is retryable when its status is (408, 429, 5xx but 501,
    or a 401 whose token was just refreshed); a transport failure unless it
    cannot change on replay (a certificate that does not verify, a refused
    redirect). Integrity failures, bad input and everything else are final.
    """
    if isinstance(exc, RegistryError | TransportError):
        return exc.retryable
    return False


def refuses_monolithic(exc: BaseException) -> bool:
    """True when ``exc`` is a registry refusing a monolithic upload: send chunks."""
    return (
        isinstance(exc, RegistryError) and exc.method == "PUT" and exc.status in REFUSED_MONOLITHIC
    )


def retry_after_of(exc: AsyncregError) -> float | None:
    """The ``Retry-After`` a failure carried, in seconds, or None."""
    return exc.retry_after if isinstance(exc, RegistryError) else None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Returns None for a missing or unparseable value; never negative.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Full-jitter exponential delay before retry number ``attempt`` (1-based)."""
    ceiling = min(policy.backoff_cap, policy.backoff_base * (2 ** (attempt - 1)))
    return (rng or random).uniform(0, ceiling)


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Delay before the next try after failed try number ``attempt``, or None to give up."""
    if attempt >= policy.attempts:
        return None
    delay = backoff_delay(policy, attempt, rng)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.retry_after_cap))
    return delay
