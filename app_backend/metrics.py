"""Prometheus metrics of the demo application, served on ``GET /metrics``.

The observability and canary lessons query these series (Flagger's request-success-rate
and latency checks, Grafana panels), so their names and labels are part of the course:

* ``app_backend_http_requests_total{code,method,path,version}``: counter of answered requests;
* ``app_backend_http_request_duration_seconds{method,path,version}``: latency histogram;
* ``app_backend_pool_connections_in_use`` / ``_pool_size`` / ``_pool_waiting``: the pool that
  the v1 bug drains, which is how students find the bug from a dashboard;
* ``app_backend_build_info{version}``: always 1, to tell versions apart in a canary;
* the standard ``process_*`` series.

``path`` is the route template (``/status/{code}``), never the raw path, so a scanner hitting
random URLs cannot blow up the number of series. Everything lives in a private
:class:`CollectorRegistry`, so several applications in one test process do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from app_backend.pool import ConnectionPool

PREFIX = "app_backend"
# From a fast in-process answer (about a millisecond) to the 30 s cap of /delay.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# Any other verb is folded into OTHER: clients choose the method, and label values they choose
# must be bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
# Path label for requests that matched no route (404/405).
UNMATCHED_PATH = "<unmatched>"


class Metrics:
    """The application's collectors and a cheap per-request :meth:`observe`."""

    def __init__(self, version: str, pool: ConnectionPool) -> None:
        self.version = version
        self.registry = CollectorRegistry()
        self._requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by status code, method, route and app version.",
            ["code", "method", "path", "version"],
            registry=self.registry,
        )
        self._latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time spent handling an HTTP request, by method, route and app version.",
            ["method", "path", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        in_use = Gauge(
            f"{PREFIX}_pool_connections_in_use",
            "Database pool connections checked out (v1 leaks them until the pool is full).",
            registry=self.registry,
        )
        in_use.set_function(lambda: pool.in_use)
        size = Gauge(
            f"{PREFIX}_pool_size",
            "Database pool capacity (BUG_AFTER).",
            registry=self.registry,
        )
        size.set(pool.size)
        waiting = Gauge(
            f"{PREFIX}_pool_waiting",
            "Requests waiting for a free pool connection (with the v1 bug: hanging requests).",
            registry=self.registry,
        )
        waiting.set_function(lambda: pool.waiting)
        info = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the version label tells which app version answers.",
            ["version"],
            registry=self.registry,
        )
        info.labels(version=version).set(1)
        ProcessCollector(registry=self.registry)
        # labels() validates and locks on every call; the handful of label combinations a
        # process sees are resolved once and kept, which matters at thousands of requests/s.
        self._counter_children: dict[tuple[int, str, str], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def observe(self, method: str, path: str, code: int, seconds: float) -> None:
        """Count one answered request and record how long it took."""
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        key = (code, method, path)
        counter = self._counter_children.get(key)
        if counter is None:
            counter = self._requests.labels(
                code=str(code), method=method, path=path, version=self.version
            )
            self._counter_children[key] = counter
        counter.inc()
        latency_key = (method, path)
        histogram = self._latency_children.get(latency_key)
        if histogram is None:
            histogram = self._latency.labels(method=method, path=path, version=self.version)
            self._latency_children[latency_key] = histogram
        histogram.observe(seconds)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """Exposition body and its content type, negotiated from the ``Accept`` header.

        Prometheus asks for OpenMetrics when it can; ``curl`` gets the classic text format.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
