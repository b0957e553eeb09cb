"""``kubelab traces``: the recent traces of a service in Jaeger, as waterfalls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from kubelab.cli.common import console, options, print_json
from kubelab.i18n import _

if TYPE_CHECKING:
    from rich.console import RenderableType

    from kubelab.observe.api import ComponentApi
    from kubelab.observe.traces import Trace

_SERVICE = "app-backend"
_FULL_ID = 16  # hex digits of a 64-bit trace id; shorter ids are prefixes of listed ones


def _default_service(lesson: str | None, url: str | None) -> str:
    """``app-backend.<lesson namespace>``, as Istio's sidecars name it in Jaeger."""
    from kubelab.observe.api import namespace_of

    return f"{_SERVICE}.{namespace_of(lesson, url or None)}"


def _load(
    api: ComponentApi, trace_id: str | None, service: str, lookback: str, limit: int
) -> list[Trace]:
    from kubelab.errors import UsageError
    from kubelab.observe.traces import fetch_trace, fetch_traces

    if trace_id is not None and len(trace_id) >= _FULL_ID:
        return [fetch_trace(api.get, trace_id)]
    found = fetch_traces(api.get, service, lookback, limit)
    if trace_id is None:
        return found
    chosen = [t for t in found if t.trace_id.startswith(trace_id.lower())]
    if not chosen:
        raise UsageError(
            _("no trace id starts with {prefix} among the last {limit} traces of {service}").format(
                prefix=trace_id, limit=limit, service=service
            ),
            hint=_("Give the full trace id, or a larger --limit or --lookback."),
        )
    return chosen


def traces(
    ctx: typer.Context,
    trace_id: Annotated[
        str | None,
        typer.Argument(help="Only this trace: its full id, or the first characters of one listed."),
    ] = None,
    lesson: Annotated[
        str | None,
        typer.Option("--lesson", "-l", help="Lesson id (default: the running lesson)."),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(
            "--service", "-s", help="Service as Jaeger names it (default: app-backend.<namespace>)."
        ),
    ] = None,
    lookback: Annotated[
        str, typer.Option("--lookback", help="How far back to look: 30s, 5m, 1h.")
    ] = "15m",
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=200, help="At most this many (latest) traces.")
    ] = 10,
    hung_ms: Annotated[
        float,
        typer.Option(
            "--hung-ms",
            min=1,
            help="A trace this slow (ms) counts as hung, as do status 0, DC, UT.",
        ),
    ] = 1000.0,
    only_hung: Annotated[
        bool,
        typer.Option("--only-hung", help="Draw only the hung traces (the summary counts all)."),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Jaeger's query API, e.g. a port-forward: http://127.0.0.1:16686 "
            "(default: the lesson's cluster, through the API server).",
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Refresh in place; Ctrl-C to stop.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.5, max=600, help="Seconds between refreshes.")
    ] = 2.0,
) -> None:
    """Recent traces of a service from Jaeger: a summary, then each one as a waterfall."""
    from rich.console import Group
    from rich.text import Text

    from kubelab.errors import UsageError
    from kubelab.observe import traces as tr
    from kubelab.observe.api import direct, lesson_api

    opts = options(ctx)
    window = tr.check_lookback(lookback)
    if follow and opts.json:
        raise UsageError(
            _("--follow redraws the screen and cannot write JSON"),
            hint=_("Leave out --follow to get the traces as JSON once."),
        )
    api = direct(url) if url else lesson_api("jaeger", lesson)
    name = service or _default_service(lesson, url)

    def suggestions(found: list[Trace]) -> list[str]:
        return [] if found else tr.suggest_services(name, tr.fetch_services(api.get))

    if opts.json:
        found = _load(api, trace_id, name, window, limit)
        shown = [t for t in found if t.hung(hung_ms)] if only_hung else found
        print_json(
            {
                "service": name,
                "lookback": window,
                "hung_ms": hung_ms,
                "only_hung": only_hung,
                "source": api.where,
                "summary": tr.summarize(found, hung_ms).to_json(),
                "traces": [t.to_json(hung_ms) for t in shown],
                "suggestions": suggestions(found),
            }
        )
        return

    out = console()
    width = max(20, min(60, out.width // 3))

    def view() -> RenderableType:
        found = _load(api, trace_id, name, window, limit)
        if not found:
            return Text(tr.no_traces_message(name, window, suggestions(found)), style="yellow")
        if trace_id is not None:
            return Group(*(tr.waterfall(t, hung_ms, width) for t in found))
        return tr.render_traces(found, name, window, hung_ms, width, only_hung)

    if not follow:
        out.print(view())
        return
    _follow(view, interval, api.where)


def _follow(view: Callable[[], RenderableType], interval: float, where: str) -> None:
    """Redraw ``view()`` every ``interval`` seconds until Ctrl-C (which exits 0)."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    def frame() -> RenderableType:
        footer = _("{time}: {source}, every {interval:g} s; Ctrl-C to stop").format(
            time=time.strftime("%H:%M:%S"), source=where, interval=interval
        )
        return Group(view(), Text(""), Text(footer, style="dim"))

    try:
        with Live(frame(), console=console(), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return
