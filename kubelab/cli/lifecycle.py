"""``kubelab down`` and ``kubelab status``: what runs, and removing it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from kubelab.cli.common import console, options, print_json
from kubelab.i18n import _


def down(
    ctx: typer.Context,
    lesson: Annotated[str | None, typer.Argument(help="Lesson id (default: every lesson).")] = None,
    all_components: Annotated[
        bool,
        typer.Option("--all", help="Also remove every component, even ones other lessons use."),
    ] = False,
) -> None:
    """Remove what `kubelab up` created for a lesson (the sandbox stops entirely)."""
    from kubelab import homelock
    from kubelab.lessons.loader import find_lesson
    from kubelab.lessons.runner import LessonRunner
    from kubelab.providers import get_provider
    from kubelab.providers.sandbox import leftover_pids, sandbox_dir, stop
    from kubelab.state import StateStore

    opts = options(ctx)
    store = StateStore()
    removed: list[str] = []
    # Under the lifecycle lock: an `up` still running finishes first, and what it
    # started is then removed too (kubelab.homelock).
    with homelock.exclusive(store.path.parent, "down"):
        state = store.load()
        names = [lesson] if lesson else list(state.lessons)
        for name in names:
            record = state.lessons.get(name)
            if record is None:
                continue
            if record.provider:
                runner = LessonRunner(find_lesson(name), get_provider(record.provider), store)
                removed += runner.down(all_components=all_components)
            else:
                with store.transaction() as st:
                    st.lessons.pop(name, None)
        # A sandbox no lesson claims (crashed, or its state lost) is cleaned up too.
        if not lesson and (leftover_pids() or sandbox_dir().exists()):
            pids = stop()
            if pids:
                removed.append(f"stopped a leftover sandbox ({len(pids)} processes)")
    if opts.json:
        print_json({"removed": removed, "lessons": names})
        return
    out = console()
    for line in removed:
        out.print(f"[green]✓[/] {line}")
    out.print("Nothing was running." if not removed and not names else "Done.")


def status(ctx: typer.Context) -> None:
    """What is running: lessons, their provider, kubeconfig, ingress, progress."""
    from kubelab.providers.sandbox import current, leftover_pids, mesh_down
    from kubelab.providers.sandbox import mesh_running as mesh_is_running
    from kubelab.state import StateStore

    opts = options(ctx)
    state = StateStore().load()
    sandbox = current()
    mesh_running = sandbox is not None and mesh_is_running()
    lessons: list[dict[str, Any]] = []
    for record in state.lessons.values():
        if not record.steps_done:
            continue
        alive = None if record.provider != "sandbox" else sandbox is not None
        lessons.append(
            {
                "lesson": record.lesson,
                "provider": record.provider,
                "kubeconfig": record.details.get("kubeconfig"),
                "ingress": record.details.get("ingress"),
                "namespace": record.details.get("namespace"),
                "steps_done": record.steps_done,
                "running": alive,
                "passed": sum(
                    p.status == "passed" for p in state.progress.get(record.lesson, {}).values()
                ),
            }
        )
    crashed = sandbox is None and bool(leftover_pids())
    if opts.json:
        top = lessons[-1] if lessons else {}
        mesh = mesh_running if sandbox is not None else None
        print_json({**top, "lessons": lessons, "sandbox_crashed": crashed, "mesh_running": mesh})
        return
    out = console()
    if not lessons:
        out.print("No lesson is running. Start one: kubelab up istio-traffic-splitting")
    for item in lessons:
        state_text = {True: "[green]running[/]", False: "[red]not running[/]", None: ""}[
            item["running"]
        ]
        out.print(f"[bold]{item['lesson']}[/] on {item['provider']} {state_text}")
        out.print(f"  kubeconfig: {item['kubeconfig']}")
        if item["ingress"]:
            out.print(f"  ingress:    {item['ingress']}")
        out.print(f"  steps done: {', '.join(item['steps_done'])}")
        out.print(f"  exercises passed: {item['passed']}")
        if item["running"] and not mesh_running:
            message, hint = mesh_down()
            out.print(f"  [red]{message}[/]. {hint}")
        if item["running"] is False:
            out.print(
                "  The sandbox is not running: `kubelab up LESSON --provider sandbox` restarts it."
            )
    if crashed:
        out.print(
            "[yellow]A crashed sandbox left processes behind: `kubelab down` removes them.[/]"
        )


def open_component(
    ctx: typer.Context,
    component: Annotated[
        str, typer.Argument(help="kiali, jaeger, gitea, victoria-metrics or argo-rollouts.")
    ],
    lesson: Annotated[str | None, typer.Option("--lesson", "-l", help="Lesson id.")] = None,
    browser: Annotated[bool, typer.Option(help="Open a browser window.")] = True,
    token_only: Annotated[
        bool,
        typer.Option(
            "--token-only",
            help="Kiali: only write a fresh login token (for its --expose-dashboards URL).",
        ),
    ] = False,
) -> None:
    """Port-forward to a dashboard and open it; Ctrl-C stops the forwarding.

    Kiali asks for a login: a view-only token is written to a private file first."""
    import time
    import webbrowser

    from kubelab.cluster.kube import Kube
    from kubelab.components.catalog import CATALOG
    from kubelab.components.values import LOGIN_DASHBOARDS
    from kubelab.errors import UsageError
    from kubelab.lessons.session import open_session
    from kubelab.providers import get_provider
    from kubelab.state import StateStore

    opts = options(ctx)
    # Every component with a web UI (Argo Rollouts' dashboard included).
    names = tuple(name for name, entry in CATALOG.items() if entry.ui is not None)
    if component not in names:
        raise UsageError(f"cannot open {component!r}", hint=f"Use one of: {', '.join(names)}.")
    session = open_session(StateStore(), lesson)
    if not session.deployed or "kubeconfig" not in session.record.details:
        raise UsageError(
            f"lesson {session.loaded.lesson.id} is not running, so it has no {component} to open",
            hint=f"kubelab up {session.loaded.lesson.id} --provider kind (or existing)",
        )
    if session.record.provider and get_provider(session.record.provider).offline:
        views = {"kiali": "graph", "victoria-metrics": "graph", "jaeger": "traces"}
        raise UsageError(
            _("the {provider} has no {component} web page").format(
                provider=session.record.provider, component=component
            ),
            hint=(
                _("Use `{command}`: it shows the same data in the terminal.").format(
                    command=f"kubelab {views[component]}"
                )
                if component in views
                else _("Run the lesson on a real cluster (kind, or any kubeconfig) for it.")
            ),
        )
    if session.available is not None and component not in session.available:
        raise UsageError(
            f"{component} is not installed for {session.loaded.lesson.id} on "
            f"{session.record.provider}",
            hint="The sandbox has no dashboards; run the lesson on a real cluster.",
        )
    entry = CATALOG[component]
    endpoint = entry.ui or entry.api
    if endpoint is None:
        raise UsageError(f"{component} has no web interface")
    namespace, service, port = endpoint
    kube = Kube(Path(session.record.details["kubeconfig"]))
    login = dashboard_login(kube, component) if component in LOGIN_DASHBOARDS else None
    if token_only:
        if login is None:
            raise UsageError(f"{component} has no login", hint=f"Run `kubelab open {component}`.")
        if opts.json:
            print_json({"component": component, "token_file": str(login[0])})
        else:
            console().print(_login_line(entry.title, login))
        return
    with kube.port_forward(namespace, f"svc/{service}", port) as local:
        url = f"http://127.0.0.1:{local}{entry.ui_path if entry.ui else '/'}"
        if opts.json:
            print_json(
                {
                    "component": component,
                    "url": url,
                    "token_file": str(login[0]) if login else None,
                }
            )
        else:
            console().print(f"{entry.title}: {url}  (Ctrl-C to stop)")
            if login is not None:
                console().print(_login_line(entry.title, login))
        if browser:
            webbrowser.open(url)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            return


#: How long a dashboard login token lasts (a class evening).
LOGIN_SECONDS = 8 * 3600


def dashboard_login(kube: Any, component: str) -> tuple[Path, dt.datetime]:
    """A fresh view-only token of the dashboard viewer ServiceAccount, written to a private
    file of kubelab's home (never printed): ``(file, expiry)``."""
    from kubelab import paths
    from kubelab.components.catalog import ISTIO_NAMESPACE
    from kubelab.components.values import DASHBOARD_VIEWER

    token, expires = kube.create_token(ISTIO_NAMESPACE, DASHBOARD_VIEWER, LOGIN_SECONDS)
    path = paths.home_dir() / "tokens" / f"{component}-login"
    paths.write_private(path, token + "\n")
    return path, expires


def _login_line(title: str, login: tuple[Path, dt.datetime]) -> str:
    from rich.markup import escape

    path, expires = login
    until = expires.astimezone().strftime("%H:%M")
    return (
        f"{title} asks for a token: paste the one in {escape(str(path))} "
        f"(view only, valid until {until})."
    )
