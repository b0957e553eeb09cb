"""``kubelab traces``: Jaeger's traces of a service, read and drawn as waterfalls.

Jaeger's HTTP query API (v1 and v2 answer alike) gives a trace as its spans and the
processes that reported them. Istio's sidecars report one span per request and side:
the caller's ``client`` span (``upstream_cluster`` ``outbound|80|v1|host``: the subset,
i.e. the version that answered) and the callee's ``server`` span (``inbound|8080||``,
with the callee's own ``istio.canonical_revision``). Envoy's ``response_flags`` tell a
request the client gave up on (``DC``) or that timed out (``UT``) from an answer.

Parsing and drawing are pure; :func:`fetch_traces` and friends take the ``get`` of a
:class:`kubelab.observe.api.ComponentApi`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.text import Text

from kubelab.errors import SetupError, UsageError
from kubelab.i18n import _
from kubelab.observe.api import Getter

TagValue = str | bool | int | float

DEFAULT_HUNG_MS = 1000.0
_LOOKBACK = re.compile(r"(\d+)([smh])")
_GAVE_UP_FLAGS = frozenset({"DC", "UT"})  # downstream disconnected, upstream timeout


@dataclass(frozen=True)
class Span:
    """One span; ``start`` is in µs from its trace's start, ``depth`` 0 for a root."""

    span_id: str
    parent_id: str | None
    depth: int
    service: str
    operation: str
    start: int
    duration: int
    tags: dict[str, TagValue]
    status: int | None  # http.status_code; 0 when the client gave up
    flags: str  # Envoy's response_flags, "-" for none
    version: str | None  # the version that answered, when the span tells

    @property
    def flag_set(self) -> frozenset[str]:
        return frozenset(f for f in self.flags.split(",") if f and f != "-")

    @property
    def failed(self) -> bool:
        """Status 0 or 5xx, a DC/UT flag, or an ``error`` tag."""
        return (
            self.status == 0
            or (self.status is not None and self.status >= 500)
            or bool(self.flag_set & _GAVE_UP_FLAGS)
            or str(self.tags.get("error", "")).lower() == "true"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "depth": self.depth,
            "service": self.service,
            "operation": self.operation,
            "start_us": self.start,
            "duration_us": self.duration,
            "duration_ms": round(self.duration / 1000, 3),
            "status": self.status,
            "flags": self.flags,
            "version": self.version,
            "tags": self.tags,
        }


@dataclass(frozen=True)
class Trace:
    """A trace: ``start`` in µs since the epoch, ``spans`` in tree order (root first)."""

    trace_id: str
    start: int
    duration: int
    operation: str  # the root span's
    spans: tuple[Span, ...]

    @property
    def root(self) -> Span:
        return self.spans[0]

    @property
    def status(self) -> int | None:
        return self.root.status

    @property
    def flags(self) -> str:
        return self.root.flags

    @property
    def version(self) -> str | None:
        """The version that answered: the first span, in tree order, that tells it."""
        return next((s.version for s in self.spans if s.version is not None), None)

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.start / 1e6, tz=UTC)

    def hung(self, threshold_ms: float = DEFAULT_HUNG_MS) -> bool:
        """The root got no answer (status 0), was cut (DC) or timed out (UT), or took at
        least ``threshold_ms``."""
        return (
            self.status == 0
            or bool(self.root.flag_set & _GAVE_UP_FLAGS)
            or self.duration >= threshold_ms * 1000
        )

    def to_json(self, threshold_ms: float = DEFAULT_HUNG_MS) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "start": self.started_at.isoformat(),
            "start_us": self.start,
            "duration_us": self.duration,
            "duration_ms": round(self.duration / 1000, 3),
            "operation": self.operation,
            "service": self.root.service,
            "status": self.status,
            "flags": self.flags,
            "version": self.version,
            "hung": self.hung(threshold_ms),
            "spans": [s.to_json() for s in self.spans],
        }


@dataclass(frozen=True)
class VersionStats:
    version: str | None
    traces: int
    median_ms: float
    p95_ms: float


@dataclass(frozen=True)
class Summary:
    traces: int
    hung: int
    versions: tuple[VersionStats, ...]  # by version name; unknown last

    def to_json(self) -> dict[str, Any]:
        return {
            "traces": self.traces,
            "hung": self.hung,
            "versions": [
                {
                    "version": v.version,
                    "traces": v.traces,
                    "median_ms": round(v.median_ms, 3),
                    "p95_ms": round(v.p95_ms, 3),
                }
                for v in self.versions
            ],
        }


# -- reading Jaeger's answers -------------------------------------------------------------


def check_lookback(lookback: str) -> str:
    """``lookback`` when Jaeger reads it as a duration (``30s``, ``5m``, ``1h``)."""
    match = _LOOKBACK.fullmatch(lookback.strip())
    if match is None or int(match.group(1)) == 0:
        raise UsageError(
            _("{lookback} is not a duration").format(lookback=lookback),
            hint=_("For example: --lookback 30s, --lookback 5m or --lookback 1h."),
        )
    return match.group(0)


def fetch_traces(get: Getter, service: str, lookback: str = "15m", limit: int = 10) -> list[Trace]:
    """The latest ``limit`` traces of ``service`` in the last ``lookback``, newest first."""
    params = {"service": service, "lookback": lookback, "limit": str(limit)}
    return parse_traces(get("/api/traces", params))[:limit]


def fetch_trace(get: Getter, trace_id: str) -> Trace:
    """The trace ``trace_id`` (its full id, as Jaeger knows it)."""
    found = parse_traces(get(f"/api/traces/{trace_id}", {}))
    if not found:
        raise SetupError(
            _("Jaeger has no trace {trace}").format(trace=trace_id),
            hint=_("Traces older than Jaeger's retention are gone; list recent ones first."),
        )
    return found[0]


def fetch_services(get: Getter) -> list[str]:
    """The services Jaeger has spans of."""
    return sorted(str(name) for name in _data(get("/api/services", {})))


def suggest_services(service: str, known: Iterable[str]) -> list[str]:
    """Names in ``known`` that ``service`` may have meant (none when it is known)."""
    names = list(known)
    if service in names:
        return []
    base = service.split(".")[0]
    alike = [n for n in names if base and (n.startswith(base + ".") or service in n)]
    close = difflib.get_close_matches(service, names, n=3, cutoff=0.6)
    return list(dict.fromkeys(alike + close))[:3]


def parse_traces(text: str) -> list[Trace]:
    """The traces of an answer of ``/api/traces`` (or ``/api/traces/{id}``), newest first."""
    try:
        traces = [_trace(raw) for raw in _data(text) if raw.get("spans")]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _unreadable(text) from exc
    return sorted(traces, key=lambda t: t.start, reverse=True)


def _unreadable(text: str) -> SetupError:
    return SetupError(
        _("Jaeger gave an unreadable answer: {answer!r}").format(answer=text[:200]),
        hint=_("Is that Jaeger's query API (port 16686)? Check the URL or the component."),
    )


def _data(text: str) -> list[Any]:
    """An answer's ``data``; Jaeger's own ``errors`` raised as a :class:`SetupError`."""
    try:
        answer = json.loads(text)
    except ValueError:
        raise _unreadable(text) from None
    if not isinstance(answer, dict):
        raise _unreadable(text)
    errors = answer.get("errors") or []
    if errors:
        said = "; ".join(str(e.get("msg") or e) if isinstance(e, dict) else str(e) for e in errors)
        raise SetupError(
            _("Jaeger answered: {message}").format(message=said),
            hint=_("Check the service name, the lookback or the trace id; Jaeger's logs say more."),
        )
    data = answer.get("data")
    if data is None:
        return []
    if not isinstance(data, list):
        raise _unreadable(text)
    return data


def _tag_value(tag: dict[str, Any]) -> TagValue:
    value: Any = tag.get("value")
    kind = tag.get("type")
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "int64":
        return int(value)
    if kind == "float64":
        return float(value)
    return str(value)


def _tags(raw: Iterable[dict[str, Any]] | None) -> dict[str, TagValue]:
    return {str(t["key"]): _tag_value(t) for t in raw or []}


def _status(tags: dict[str, TagValue]) -> int | None:
    value = tags.get("http.status_code")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def answering_version(tags: dict[str, TagValue]) -> str | None:
    """The version that answered a span's request: the subset of an outbound cluster
    (``outbound|80|v1|host``), else the canonical revision of a server (inbound) span."""
    cluster = str(tags.get("upstream_cluster", ""))
    parts = cluster.split("|")
    if len(parts) == 4 and parts[0] == "outbound" and parts[2]:
        return parts[2]
    if cluster.startswith("inbound|") or tags.get("span.kind") == "server":
        revision = tags.get("istio.canonical_revision")
        return None if revision is None else str(revision)
    return None


def _parent(raw: dict[str, Any]) -> str | None:
    for ref in raw.get("references") or []:
        if ref.get("refType") == "CHILD_OF":
            return str(ref["spanID"])
    return None


def _span(raw: dict[str, Any], depth: int, trace_start: int, processes: dict[str, Any]) -> Span:
    tags = _tags(raw.get("tags"))
    process = processes.get(str(raw.get("processID"))) or {}
    return Span(
        span_id=str(raw["spanID"]),
        parent_id=_parent(raw),
        depth=depth,
        service=str(process.get("serviceName") or "?"),
        operation=str(raw.get("operationName") or ""),
        start=int(raw["startTime"]) - trace_start,
        duration=int(raw["duration"]),
        tags=tags,
        status=_status(tags),
        flags=str(tags.get("response_flags", "-")),
        version=answering_version(tags),
    )


def _trace(raw: dict[str, Any]) -> Trace:
    processes = raw.get("processes") or {}
    spans: list[dict[str, Any]] = sorted(raw["spans"], key=lambda s: int(s["startTime"]))
    start = int(spans[0]["startTime"])
    end = max(int(s["startTime"]) + int(s["duration"]) for s in spans)
    ids = {str(s["spanID"]) for s in spans}
    children: dict[str | None, list[int]] = {}  # parent span id -> spans, by start
    for index, s in enumerate(spans):
        parent = _parent(s)
        children.setdefault(parent if parent in ids else None, []).append(index)

    ordered: list[Span] = []
    seen: set[int] = set()
    # Roots first, depth first; then spans whose parents form a loop (bad data), as roots.
    for first in [*children.get(None, []), *range(len(spans))]:
        stack = [(first, 0)]
        while stack:
            index, depth = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            ordered.append(_span(spans[index], depth, start, processes))
            below = children.get(ordered[-1].span_id, [])
            stack.extend((child, depth + 1) for child in reversed(below))
    return Trace(str(raw["traceID"]), start, end - start, ordered[0].operation, tuple(ordered))


# -- summary and drawing --------------------------------------------------------------------


def _p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def summarize(traces: list[Trace], threshold_ms: float = DEFAULT_HUNG_MS) -> Summary:
    """How many traces, how many hung, and each version's median and p95 duration."""
    by_version: dict[str | None, list[float]] = {}
    for t in traces:
        by_version.setdefault(t.version, []).append(t.duration / 1000)
    versions = tuple(
        VersionStats(version, len(ms), statistics.median(ms), _p95(ms))
        for version, ms in sorted(by_version.items(), key=lambda kv: (kv[0] is None, kv[0]))
    )
    return Summary(len(traces), sum(t.hung(threshold_ms) for t in traces), versions)


def bar_cells(start: int, duration: int, total: int, width: int) -> tuple[int, int]:
    """Where a span's bar begins and how long it is, in cells of a ``width``-cell track
    that stands for ``total`` µs; at least one cell, never past the track."""
    if total <= 0:
        return 0, width
    offset = min(start * width // total, width - 1)
    end = ((start + duration) * width + total // 2) // total
    return offset, min(width, max(end, offset + 1)) - offset


def _ms(us: int) -> str:
    return f"{us / 1000:.1f}"


def _status_style(status: int | None) -> str:
    if status is None:
        return "dim"
    if status == 0 or status >= 500:
        return "red"
    return "yellow" if status >= 400 else "green"


def _summary_line(
    summary: Summary, service: str, lookback: str, threshold_ms: float, shown: int
) -> Text:
    parts = [
        "[bold]"
        + _("{count} traces of {service} in the last {lookback}").format(
            count=summary.traces, service=escape(service), lookback=lookback
        )
        + "[/]"
    ]
    if shown != summary.traces:
        parts[0] += " " + _("(showing the {count} hung)").format(count=shown)
    for v in summary.versions:
        parts.append(
            _("{version}: {count}, median {median:.1f} ms, p95 {p95:.1f} ms").format(
                version=escape(v.version or "?"), count=v.traces, median=v.median_ms, p95=v.p95_ms
            )
        )
    hung = _("{count} hung (≥ {threshold:g} ms, status 0, DC or UT)").format(
        count=summary.hung, threshold=threshold_ms
    )
    parts.append(f"[bold red]{hung}[/]" if summary.hung else hung)
    return Text.from_markup("  ·  ".join(parts))


def _header(trace: Trace, threshold_ms: float) -> Text:
    time = trace.started_at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    status = "?" if trace.status is None else str(trace.status)
    line = (
        f"[bold]{time}[/]  [cyan]{trace.trace_id[:8]}[/]  [bold]{_ms(trace.duration)} ms[/]  "
        + _("status")
        + f" [{_status_style(trace.status)}]{status}[/]  "
        + _("flags")
        + f" {escape(trace.flags)}  "
        + _("version")
        + f" [bold]{escape(trace.version or '?')}[/]"
    )
    if trace.hung(threshold_ms):
        marker = _("TIMEOUT") if "UT" in trace.root.flag_set else _("HUNG")
        line += f"  [bold white on red] {marker} [/]"
    return Text.from_markup(line)


def _row(span: Span, total: int, width: int) -> Text:
    offset, length = bar_cells(span.start, span.duration, total, width)
    row = Text()
    row.append("│" + "·" * offset, style="dim")
    row.append("█" * length, style="red" if span.failed else "green")
    row.append("·" * (width - offset - length), style="dim")
    row.append("│", style="dim")
    row.append(f" {_ms(span.duration):>8} ms  ")
    if span.depth:
        row.append("   " * (span.depth - 1) + "└─ ", style="dim")
    row.append(span.service, style="bold")
    row.append(f" {span.operation}")
    if span.status is not None:
        row.append(f"  {span.status}", style=_status_style(span.status))
    if span.flag_set:
        row.append(f" {span.flags}", style="red" if span.flag_set & _GAVE_UP_FLAGS else "yellow")
    cluster = span.tags.get("upstream_cluster")
    # (Envoy names an upstream span "router <cluster> egress": said once is enough.)
    if cluster and str(cluster) not in span.operation:
        row.append(f"  → {cluster}", style="dim")
    return row


def waterfall(trace: Trace, threshold_ms: float = DEFAULT_HUNG_MS, width: int = 40) -> Group:
    """A trace's header line, then one row per span: a bar placed by the span's start and
    sized by its duration on a ``width``-cell track for the whole trace."""
    return Group(
        _header(trace, threshold_ms), *(_row(s, trace.duration, width) for s in trace.spans)
    )


def render_traces(
    traces: list[Trace],
    service: str,
    lookback: str,
    threshold_ms: float = DEFAULT_HUNG_MS,
    width: int = 40,
    only_hung: bool = False,
) -> Group:
    """The summary line, then each trace (newest first) as a waterfall; ``only_hung``
    draws only the hung ones (the summary still counts all)."""
    summary = summarize(traces, threshold_ms)
    shown = [t for t in traces if t.hung(threshold_ms)] if only_hung else traces
    parts: list[Text | Group] = [
        _summary_line(summary, service, lookback, threshold_ms, len(shown))
    ]
    for trace in sorted(shown, key=lambda t: t.start, reverse=True):
        parts += [Text(""), waterfall(trace, threshold_ms, width)]
    return Group(*parts)


def no_traces_message(service: str, lookback: str, suggestions: list[str]) -> str:
    """What to do when Jaeger has no trace of ``service`` (with names it may have meant)."""
    message = _(
        "no traces of {service} in the last {lookback}: send some requests (the lesson's "
        "commands), then wait a few seconds"
    ).format(service=service, lookback=lookback)
    if suggestions:
        message += "\n" + _("did you mean {names}? (kubelab traces --service {first})").format(
            names=", ".join(suggestions), first=suggestions[0]
        )
    return message
