"""The retry policy: what is retried, how long it waits, when it gives up (fake time)."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest
import urllib3.exceptions as u3
from kubernetes.client.exceptions import ApiException
from support import FakeTime
from urllib3 import HTTPHeaderDict

from kubelab.cluster.kube import classify_kube_error
from kubelab.retry import RetryPolicy, Verdict, call_with_retry, parse_retry_after


def policy(t: FakeTime, **kwargs: Any) -> RetryPolicy:
    kwargs.setdefault("jitter", 0.0)
    return RetryPolicy(sleep=t.sleep, clock=t.clock, random=lambda: 1.0, **kwargs)


def api_error(status: int, retry_after: str | None = None) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return exc


class Flaky:
    """Raises the given exceptions in turn, then returns "ok"; records the timeouts."""

    def __init__(self, *errors: BaseException, cost: float = 0.0, t: FakeTime | None = None):
        self.errors = list(errors)
        self.calls: list[float] = []
        self.cost, self.t = cost, t

    def __call__(self, remaining: float) -> str:
        self.calls.append(remaining)
        if self.t is not None:
            self.t.now += self.cost
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def kube_classify(exc: BaseException) -> Verdict:
    return classify_kube_error(exc, idempotent=True)


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter_below() -> None:
    p = RetryPolicy(initial_delay=0.2, multiplier=2, max_delay=1.0, jitter=0.0)
    assert [p.backoff(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    jittered = RetryPolicy(initial_delay=1.0, jitter=0.5, random=lambda: 1.0)
    assert jittered.backoff(1) == 0.5  # at most half of the delay is taken off
    assert RetryPolicy(initial_delay=1.0, jitter=0.5, random=lambda: 0.0).backoff(1) == 1.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_with_backoff(status: int) -> None:
    t = FakeTime(100.0)
    fn = Flaky(api_error(status), api_error(status))
    assert call_with_retry(fn, policy(t, initial_delay=0.1), kube_classify) == "ok"
    assert t.sleeps == [0.1, 0.2]
    assert len(fn.calls) == 3


def test_429_honours_retry_after_instead_of_the_backoff() -> None:
    t = FakeTime(100.0)
    fn = Flaky(api_error(429, "3"), api_error(429, "0"), api_error(429))
    assert call_with_retry(fn, policy(t, initial_delay=0.1), kube_classify) == "ok"
    assert t.sleeps == [3.0, 0.0, 0.4]  # the third had no header: our own backoff (3rd)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_other_client_errors_are_never_retried(status: int) -> None:
    t = FakeTime(100.0)
    fn = Flaky(api_error(status))
    with pytest.raises(ApiException):
        call_with_retry(fn, policy(t), kube_classify)
    assert len(fn.calls) == 1 and t.sleeps == []


def test_gives_up_before_a_sleep_that_would_end_past_the_deadline() -> None:
    t = FakeTime(100.0)
    fn = Flaky(*[api_error(503)] * 10, cost=1.0, t=t)
    with pytest.raises(ApiException) as info:
        call_with_retry(fn, policy(t, deadline=10, initial_delay=1, max_delay=4), kube_classify)
    assert info.value.status == 503  # the last error, unchanged, for the caller to map
    # attempts cost 1s each: 1 +1 | 1 +2 | 1 +4 -> at 10s the next wait would pass the deadline
    assert t.sleeps == [1, 2]
    assert len(fn.calls) == 3
    assert fn.calls[0] == 10 and fn.calls[1] == 8 and fn.calls[2] == 5  # time left, to cap timeouts


def test_retry_after_longer_than_the_deadline_gives_up_at_once() -> None:
    t = FakeTime(100.0)
    fn = Flaky(api_error(429, "120"))
    with pytest.raises(ApiException):
        call_with_retry(fn, policy(t, deadline=60), kube_classify)
    assert t.sleeps == []


def test_max_attempts_bounds_a_server_that_keeps_saying_retry_after_0() -> None:
    t = FakeTime(100.0)
    fn = Flaky(*[api_error(429, "0")] * 50)
    with pytest.raises(ApiException):
        call_with_retry(fn, policy(t, max_attempts=5), kube_classify)
    assert len(fn.calls) == 5


def test_on_retry_is_told_each_attempt() -> None:
    t = FakeTime(100.0)
    seen: list[tuple[int, int, float]] = []
    fn = Flaky(api_error(500), api_error(502))
    call_with_retry(
        fn,
        policy(t, initial_delay=1),
        kube_classify,
        on_retry=lambda n, exc, delay: seen.append((n, exc.status, delay)),  # type: ignore[attr-defined]
    )
    assert seen == [(1, 500, 1.0), (2, 502, 2.0)]


CONNECT = u3.NewConnectionError(None, "refused")  # type: ignore[arg-type]
READ_TIMEOUT = u3.ReadTimeoutError(None, "/api", "read timed out")  # type: ignore[arg-type]
RESET = u3.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))


@pytest.mark.parametrize(
    ("exc", "idempotent", "retry"),
    [
        (CONNECT, True, True),
        (CONNECT, False, True),  # never sent: safe even for a POST or an exec
        (ConnectionRefusedError(111, "refused"), False, True),
        (u3.ConnectTimeoutError("connect timed out"), False, True),
        (READ_TIMEOUT, True, True),
        (READ_TIMEOUT, False, False),  # may have been acted on
        (RESET, True, True),
        (RESET, False, False),
        (TimeoutError("timed out"), True, True),
        (u3.MaxRetryError(None, "/api", READ_TIMEOUT), True, True),  # type: ignore[arg-type]
        (u3.MaxRetryError(None, "/api", u3.SSLError("bad cert")), True, False),  # type: ignore[arg-type]
        (u3.SSLError("bad cert"), True, False),
        (api_error(429), False, True),  # refused before any work
        (api_error(503), False, False),
        (api_error(503), True, True),
        (api_error(0), True, False),  # the client's own "status 0": websocket, TLS
        (ValueError("bug"), True, False),
    ],
)
def test_classification(exc: BaseException, idempotent: bool, retry: bool) -> None:
    assert classify_kube_error(exc, idempotent=idempotent).retry is retry


def test_non_idempotent_read_timeout_is_not_resent() -> None:
    t = FakeTime(100.0)
    fn = Flaky(READ_TIMEOUT)
    with pytest.raises(u3.ReadTimeoutError):
        call_with_retry(fn, policy(t), lambda e: classify_kube_error(e, idempotent=False))
    assert len(fn.calls) == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=lambda: 1_000_000) == pytest.approx(30)
    assert parse_retry_after(date, now=lambda: 2_000_000) == 0.0
    assert classify_kube_error(api_error(429, "2")).retry_after == 2.0
    # The client's headers are urllib3's case-insensitive dict; a plain dict works too.
    exc = api_error(503)
    exc.headers = HTTPHeaderDict({"retry-after": "4"})
    assert classify_kube_error(exc).retry_after == 4.0
    exc.headers = {"retry-after": "5"}
    assert classify_kube_error(exc).retry_after == 5.0


def test_a_timeout_after_the_server_answered_reports_its_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Service without endpoints: the API server answers 503 until the deadline leaves
    the last attempt too little time and it times out. The student must read the 503
    (VictoriaMetrics is not ready), not "cannot reach the Kubernetes API"."""
    from kubelab.cluster.kube import ClusterUnreachable, Kube

    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    t = FakeTime(100.0)
    kube = Kube(config, retry=policy(t, initial_delay=0.1, max_attempts=3))
    with pytest.raises(ApiException) as answered:
        kube._request(Flaky(api_error(503), api_error(503), READ_TIMEOUT), what="proxy")
    assert answered.value.status == 503
    # Never answered at all: the API is unreachable, and says so.
    with pytest.raises(ClusterUnreachable, match="ReadTimeoutError"):
        kube._request(Flaky(READ_TIMEOUT, READ_TIMEOUT, READ_TIMEOUT), what="proxy")
