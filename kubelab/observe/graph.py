"""``kubelab graph``: the mesh's traffic as Kiali draws it, from Istio's standard metrics.

Four instant queries on a Prometheus-API server (VictoriaMetrics, Prometheus) cover a
namespace over a window: the requests every version of a service answered (as its
sidecar reports them, ``reporter="destination"``), the requests every source sent to a
service (as the source's proxy reports them, ``reporter="source"``), and the p95 latency
of both. :func:`fetch_graph` turns the answers into a :class:`Graph`: source, service and
version nodes, and edges with requests per second, share of the service's traffic, error
rate and p95. :func:`render` draws it with rich, one tree per service.

An error is a response code of 500 or more, or ``0``: what Istio reports when the client
gave up or reset the connection before an answer (``curl --max-time`` against a hung
version). Series without requests in the window (rate 0) are idle edges and are left
out, as Kiali hides them.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from kubelab.errors import SetupError, UsageError
from kubelab.i18n import _
from kubelab.observe.api import Getter

NodeKind = Literal["source", "service", "version"]

_WINDOW = re.compile(r"[1-9][0-9]*[smh]")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_QUERY_PATH = "/api/v1/query"
_BAR_WIDTH = 10


@dataclass(frozen=True)
class GraphQueries:
    """The PromQL of the graph of ``namespace`` over ``window`` (``30s``, ``1m``, ``5m``),
    for Prometheus (2.42 on) and VictoriaMetrics alike."""

    namespace: str
    window: str

    def __post_init__(self) -> None:
        if not _WINDOW.fullmatch(self.window):
            raise UsageError(
                _("{window!r} is not a time window").format(window=self.window),
                hint=_("Give a number and a unit: --window 30s, 1m or 5m."),
            )
        if not _NAMESPACE.fullmatch(self.namespace):
            raise UsageError(
                _("{namespace!r} is not a Kubernetes namespace name").format(
                    namespace=self.namespace
                ),
                hint=_("kubectl get namespaces lists them."),
            )

    def _selector(self, reporter: Literal["source", "destination"]) -> str:
        # A version answers in its workload's namespace; a source calls a service there.
        if reporter == "destination":
            return f'reporter="destination",destination_workload_namespace="{self.namespace}"'
        return f'reporter="source",destination_service_namespace="{self.namespace}"'

    @property
    def versions(self) -> str:
        """Requests per second every version of a service answered, by response code."""
        return (
            "sum by (destination_service_name, destination_workload, destination_version, "
            f"response_code) (rate(istio_requests_total{{{self._selector('destination')}}}"
            f"[{self.window}]))"
        )

    @property
    def sources(self) -> str:
        """Requests per second every source sent to a service, by response code."""
        return (
            "sum by (source_workload, source_workload_namespace, destination_service_name, "
            f"response_code) (rate(istio_requests_total{{{self._selector('source')}}}"
            f"[{self.window}]))"
        )

    @property
    def version_p95(self) -> str:
        """The p95 latency (ms) of every version of a service."""
        return self._p95("destination_service_name, destination_version", "destination")

    @property
    def source_p95(self) -> str:
        """The p95 latency (ms) of every source's requests to a service."""
        return self._p95("source_workload, destination_service_name", "source")

    def _p95(self, labels: str, reporter: Literal["source", "destination"]) -> str:
        buckets = f"istio_request_duration_milliseconds_bucket{{{self._selector(reporter)}}}"
        return f"histogram_quantile(0.95, sum by ({labels}, le) (rate({buckets}[{self.window}])))"


@dataclass(frozen=True)
class Node:
    """A source workload, a service, or a version of a service (its workload)."""

    id: str
    kind: NodeKind
    name: str  # a source's workload, a service's name, a version's label
    namespace: str
    workload: str | None = None  # the workload behind a source or a version


@dataclass(frozen=True)
class Edge:
    """Traffic from node ``source`` to node ``target`` (ids) over the window."""

    source: str
    target: str
    rps: float
    share: float  # percent of the service's traffic (versions) or of its inbound (sources)
    error_rate: float  # percent of the requests answered >= 500 or "0"
    p95_ms: float | None  # None: no latency data


@dataclass(frozen=True)
class Graph:
    """The traffic of a namespace over a window, sampled at ``time`` (unix seconds)."""

    where: str
    namespace: str
    window: str
    time: float
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "namespace": self.namespace,
            "window": self.window,
            "time": datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "nodes": [asdict(n) for n in self.nodes],
            "edges": [
                {
                    "source": e.source,
                    "target": e.target,
                    "rps": round(e.rps, 4),
                    "share": round(e.share, 2),
                    "error_rate": round(e.error_rate, 2),
                    "p95_ms": None if e.p95_ms is None else round(e.p95_ms, 2),
                }
                for e in self.edges
            ],
        }


# -- reading the answers ----------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    samples: list[tuple[dict[str, str], float]]  # finite values only
    time: float | None  # when the server evaluated the query; None without series


def _unreadable(where: str, text: str) -> SetupError:
    return SetupError(
        _("{where} gave an unreadable answer: {answer!r}").format(where=where, answer=text[:200]),
        hint=_(
            "kubelab graph reads a Prometheus API (/api/v1/query): is {where} VictoriaMetrics "
            "or Prometheus?"
        ).format(where=where),
    )


def _query(get: Getter, query: str, where: str) -> _Answer:
    """A vector query's series with a finite value: NaN (0/0, a quantile without requests)
    and infinities (a quantile in the +Inf bucket) are no data."""
    text = get(_QUERY_PATH, {"query": query})
    try:
        answer = json.loads(text)
    except ValueError:
        raise _unreadable(where, text) from None
    if isinstance(answer, dict) and answer.get("status") == "error":
        raise SetupError(
            _("{where} rejected a query: {error}").format(
                where=where, error=answer.get("error") or answer.get("errorType") or text[:200]
            ),
            hint=_(
                "kubelab graph needs a Prometheus API with Istio's metrics "
                "(VictoriaMetrics, or Prometheus 2.42 or later)."
            ),
            details=[query],
        )
    try:
        data = answer["data"]
        kind = data["resultType"]
        series = [
            (
                {str(k): str(v) for k, v in r["metric"].items()},
                float(r["value"][0]),
                float(r["value"][1]),
            )
            for r in data["result"]
        ]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise _unreadable(where, text) from None
    if kind != "vector":
        raise _unreadable(where, text)
    return _Answer(
        [(labels, value) for labels, _at, value in series if math.isfinite(value)],
        series[0][1] if series else None,
    )


@dataclass
class _Traffic:
    rps: float = 0.0
    errors: float = 0.0

    def add(self, code: str, rps: float) -> None:
        self.rps += rps
        if code == "0" or (code.isdigit() and int(code) >= 500):
            self.errors += rps

    @property
    def error_rate(self) -> float:
        return 100 * self.errors / self.rps


def _labels(labels: dict[str, str], names: tuple[str, ...]) -> tuple[str, ...]:
    # Prometheus drops empty labels; Istio says "unknown" for what it does not know.
    return tuple(labels.get(name, "unknown") for name in names)


def _traffic(answer: _Answer, *names: str) -> dict[tuple[str, ...], _Traffic]:
    """The requests per second of ``answer`` summed over response codes, by ``names``;
    idle series (no requests in the window) are left out."""
    found: defaultdict[tuple[str, ...], _Traffic] = defaultdict(_Traffic)
    for labels, value in answer.samples:
        found[_labels(labels, names)].add(labels.get("response_code", ""), value)
    return {key: traffic for key, traffic in found.items() if traffic.rps > 0}


def _values(answer: _Answer, *names: str) -> dict[tuple[str, ...], float]:
    return {_labels(labels, names): value for labels, value in answer.samples}


def fetch_graph(
    get: Getter, queries: GraphQueries, where: str, clock: Callable[[], float] = time.time
) -> Graph:
    """The graph of ``queries.namespace`` from the Prometheus API behind ``get``
    (``where`` names it in messages). Raises SetupError on an error or unreadable answer."""
    versions = _query(get, queries.versions, where)
    sources = _query(get, queries.sources, where)
    version_p95 = _query(get, queries.version_p95, where)
    source_p95 = _query(get, queries.source_p95, where)

    by_version = _traffic(
        versions, "destination_service_name", "destination_version", "destination_workload"
    )
    by_source = _traffic(
        sources, "source_workload", "source_workload_namespace", "destination_service_name"
    )
    p95_of_version = _values(version_p95, "destination_service_name", "destination_version")
    p95_of_source = _values(source_p95, "source_workload", "destination_service_name")

    answered: defaultdict[str, float] = defaultdict(float)
    for (service, _v, _w), traffic in by_version.items():
        answered[service] += traffic.rps
    inbound: defaultdict[str, float] = defaultdict(float)
    for (_s, _n, service), traffic in by_source.items():
        inbound[service] += traffic.rps

    ns = queries.namespace
    nodes: dict[str, Node] = {}
    edges: list[Edge] = []
    for service in sorted(answered.keys() | inbound.keys()):
        service_id = f"service:{ns}/{service}"
        for (workload, source_ns, to), traffic in sorted(by_source.items()):
            if to != service:
                continue
            source_id = f"source:{source_ns}/{workload}"
            nodes.setdefault(source_id, Node(source_id, "source", workload, source_ns, workload))
            edges.append(
                Edge(
                    source_id,
                    service_id,
                    traffic.rps,
                    100 * traffic.rps / inbound[service],
                    traffic.error_rate,
                    p95_of_source.get((workload, service)),
                )
            )
        nodes[service_id] = Node(service_id, "service", service, ns)
        for (of, version, workload), traffic in sorted(by_version.items()):
            if of != service:
                continue
            version_id = f"version:{ns}/{workload}"
            nodes.setdefault(version_id, Node(version_id, "version", version, ns, workload))
            edges.append(
                Edge(
                    service_id,
                    version_id,
                    traffic.rps,
                    100 * traffic.rps / answered[service],
                    traffic.error_rate,
                    p95_of_version.get((service, version)),
                )
            )
    times = [a.time for a in (versions, sources, version_p95, source_p95) if a.time is not None]
    return Graph(
        where,
        ns,
        queries.window,
        times[0] if times else clock(),
        tuple(nodes.values()),
        tuple(edges),
    )


# -- drawing ------------------------------------------------------------------------------


def _style(error_rate: float) -> str:
    if error_rate == 0:
        return "green"
    return "yellow" if error_rate < 5 else "red"


def _bar(share: float) -> str:
    filled = round(share / 100 * _BAR_WIDTH)
    return "█" * filled + "░" * (_BAR_WIDTH - filled)


def _rate(rps: float) -> str:
    return f"{rps:.1f}" if rps >= 1 else f"{rps:.2f}"


def _p95(ms: float | None) -> str:
    if ms is None:
        return _("n/a")
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _source_name(node: Node) -> str:
    return _("unknown (outside the mesh)") if node.name == "unknown" else node.name


def _edge_line(nodes: dict[str, Node], edge: Edge) -> Text:
    source, target = nodes[edge.source], nodes[edge.target]
    if source.kind == "source":
        line = _("{source} → {service}  {rate} req/s  {errors:.1f}% errors  p95 {p95}").format(
            source=_source_name(source),
            service=target.name,
            rate=_rate(edge.rps),
            errors=edge.error_rate,
            p95=_p95(edge.p95_ms),
        )
    else:
        line = _(
            "{service} → {version} ({workload})  {bar} {share:.1f}%  {rate} req/s  "
            "errors {errors:.1f}%  p95 {p95}"
        ).format(
            service=source.name,
            version=target.name,
            workload=target.workload,
            bar=_bar(edge.share),
            share=edge.share,
            rate=_rate(edge.rps),
            errors=edge.error_rate,
            p95=_p95(edge.p95_ms),
        )
    return Text(line, style=_style(edge.error_rate))


def render(graph: Graph) -> Group:
    """The graph for a terminal: a header line, then each service's inbound edges (from
    its sources) and outbound edges (to its versions), colored by their error rate."""
    sampled = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(graph.time))
    # Two lines: where the data comes from can be long (a URL, a Service's address).
    header = Text(graph.where + "\n", style="bold")
    header.append(
        _("namespace {namespace} · last {window} · sampled at {time}").format(
            namespace=graph.namespace, window=graph.window, time=sampled
        )
    )
    services = [n for n in graph.nodes if n.kind == "service"]
    if not services:
        empty = _(
            "no requests in the last {window} in namespace {namespace}: generate traffic "
            "(the lesson's commands) and wait for the next scrape"
        ).format(window=graph.window, namespace=graph.namespace)
        return Group(header, Text(empty, style="yellow"))
    nodes = {n.id: n for n in graph.nodes}
    trees = []
    for service in services:
        inbound = [e for e in graph.edges if e.target == service.id]
        outbound = [e for e in graph.edges if e.source == service.id]
        total = sum(e.rps for e in outbound) or sum(e.rps for e in inbound)
        tree = Tree(
            Text.assemble(
                (service.name, "bold cyan"), "  ", _("{rate} req/s").format(rate=_rate(total))
            )
        )
        for edge in inbound + outbound:
            tree.add(_edge_line(nodes, edge))
        trees.append(tree)
    return Group(header, *trees)
