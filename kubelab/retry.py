"""Retrying calls to a server: the one policy behind kubelab's Kubernetes, Gitea and Hetzner
requests.

A server under load answers 429 (with ``Retry-After``), restarts behind a load balancer
answer 502/503/504, and a flaky network drops connections or stalls reads. Those failures
are worth another try; a 403, a 404 or a 422 never changes by itself and is returned at
once. Every retried call runs under one overall deadline (the sum of its attempts and its
sleeps), so a dead server costs at most that long, never "forever". Each client says what
is transient for it with a ``classify`` function: ``kubelab.cluster.kube`` for the
Kubernetes client, ``kubelab.images.gitea`` for Gitea's HTTP API and
``kubelab.providers.hetzner`` for hcloud (which retries some failures itself: those are
left to it).

Idempotence decides what is safe to resend. kubelab writes Kubernetes objects with
server-side apply (PATCH) and DELETE, which give the same result however often they
arrive, so a read timeout on them is retried. For a non-idempotent request (an exec, a
POST create) only failures that prove the server did not act on it are retried: the
connection was never made, or the server refused it with 429 before doing anything.

Time is injected (``sleep``, ``clock``, ``random``) so tests run the whole policy in
microseconds and deterministically.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Statuses that mean "the server (or a proxy in front of it) could not do it right now".
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry.

    ``deadline`` bounds one call from its first attempt to its last (sleeps included);
    ``max_attempts`` bounds the number of requests even when the server says
    ``Retry-After: 0``. The n-th backoff is ``initial_delay * multiplier**(n-1)`` capped
    at ``max_delay``, of which a random ``jitter`` fraction is taken off, so clients that
    failed together do not retry together.
    """

    deadline: float = 60.0
    max_attempts: int = 10
    initial_delay: float = 0.2
    max_delay: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** max(attempt - 1, 0))
        return ceiling * (1.0 - self.jitter * self.random())


@dataclass(frozen=True)
class Verdict:
    """Whether a failure is worth another attempt, and the server's ``Retry-After``."""

    retry: bool
    retry_after: float | None = None
    reason: str = ""


NO_RETRY = Verdict(False)


def call_with_retry(
    fn: Callable[[float], T],
    policy: RetryPolicy,
    classify: Callable[[BaseException], Verdict],
    *,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """``fn(remaining)`` until it returns, retrying what ``classify`` allows.

    ``fn`` gets the seconds left before the deadline (to cap its own request timeout). On
    a failure that is not retryable, or when the next attempt would start after the
    deadline or exceed ``max_attempts``, the last exception propagates unchanged so
    callers keep one error mapping. ``on_retry(attempt, exc, delay)`` is told before each
    sleep.
    """
    start = policy.clock()
    attempt = 0
    while True:
        attempt += 1
        remaining = policy.deadline - (policy.clock() - start)
        try:
            return fn(max(remaining, 0.0))
        except Exception as exc:
            verdict = classify(exc)
            if not verdict.retry or attempt >= policy.max_attempts:
                raise
            # Retry-After is the server telling us when it can take the request again;
            # retrying sooner only adds load, so it replaces our own backoff.
            if verdict.retry_after is not None:
                delay = max(verdict.retry_after, 0.0)
            else:
                delay = policy.backoff(attempt)
            if policy.clock() - start + delay >= policy.deadline:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            log.debug("attempt %d failed (%s); retrying in %.2fs", attempt, verdict.reason, delay)
            policy.sleep(delay)


# -- what servers say -------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent
    or unreadable."""
    import email.utils

    if value is None:
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)
