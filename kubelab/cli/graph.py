"""``kubelab graph``: the mesh's traffic, live in the terminal, from its metrics."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from kubelab.cli.common import console, options, print_json
from kubelab.i18n import _


def graph(
    ctx: typer.Context,
    lesson: Annotated[
        str | None,
        typer.Option("--lesson", "-l", help="Lesson id (default: the running lesson)."),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Namespace to graph (default: the lesson's; istio with --url and no lesson).",
        ),
    ] = None,
    window: Annotated[
        str,
        typer.Option("--window", help="Rates over the last 30s, 1m, 5m..."),
    ] = "1m",
    interval: Annotated[
        float,
        typer.Option("--interval", min=0.5, max=600, help="Seconds between refreshes."),
    ] = 2.0,
    once: Annotated[
        bool,
        typer.Option("--once", help="Print the graph once and exit (for scripts and tests)."),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, max=86400, help="Stop after this many seconds."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="A Prometheus-API URL, e.g. a port-forward: http://127.0.0.1:8428 "
            "(default: the lesson's VictoriaMetrics).",
        ),
    ] = None,
) -> None:
    """Requests, shares, errors and p95 latency between the mesh's sources, services and
    versions, refreshed in place until Ctrl-C (or --timeout)."""
    from kubelab.observe.api import direct, lesson_api, namespace_of
    from kubelab.observe.graph import Graph, GraphQueries, fetch_graph, render

    opts = options(ctx)
    queries = GraphQueries(namespace or namespace_of(lesson, url), window)
    api = direct(url) if url is not None else lesson_api("victoria-metrics", lesson)

    def sample() -> Graph:
        return fetch_graph(api.get, queries, api.where)

    if opts.json:
        print_json(sample().to_json())
        return
    out = console()
    if once:
        out.print(render(sample()))
        return

    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    footer = Text(
        _("refreshed every {interval:g} s; Ctrl-C to stop").format(interval=interval),
        style="dim",
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with Live(Group(render(sample()), footer), console=out, auto_refresh=False) as live:
            while deadline is None or time.monotonic() < deadline:
                left = interval if deadline is None else deadline - time.monotonic()
                time.sleep(max(0.0, min(interval, left)))
                live.update(Group(render(sample()), footer), refresh=True)
    except KeyboardInterrupt:  # Ctrl-C is how a live graph ends
        return
