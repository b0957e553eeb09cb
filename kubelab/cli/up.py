"""``kubelab up LESSON``: the lesson's lifecycle; ``--dry-run`` plans and renders only."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kubelab.cli.common import Options, complete_lesson, console, options, print_json

if TYPE_CHECKING:
    from kubelab.components.values import InstallSettings
    from kubelab.lessons.loader import LoadedLesson


def up(
    ctx: typer.Context,
    lesson: Annotated[
        str,
        typer.Argument(
            help="Lesson id (see `kubelab lessons`) or folder.", autocompletion=complete_lesson
        ),
    ],
    provider: Annotated[
        str | None,
        typer.Option("--provider", "-p", help="sandbox (default), existing, kind, hetzner or gke."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan and render every object; touch nothing."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="With --dry-run: write the rendered objects and values here."),
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="Serve Gitea and the lesson's app at *.DOMAIN."),
    ] = None,
    tls: Annotated[
        bool | None, typer.Option("--tls/--no-tls", help="Let's Encrypt certificates.")
    ] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="With --tls: the ACME account email.")
    ] = None,
    expose_dashboards: Annotated[
        bool | None,
        typer.Option(
            "--expose-dashboards/--no-expose-dashboards",
            help="With --domain and --tls: serve Kiali at kiali.DOMAIN too (token login, "
            "view only). Dashboards without a login (Jaeger) are never exposed.",
        ),
    ] = None,
    charts: Annotated[
        Path | None,
        typer.Option(
            "--charts",
            help="Install the components from the chart archives `kubelab charts pull` put "
            "in this folder, not from the chart repositories (remembered for the lesson).",
        ),
    ] = None,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Put back the lesson's objects that were changed since they were deployed "
            "(a student's kubectl patch or scale); asks first in a terminal.",
        ),
    ] = False,
) -> None:
    """Set up a lesson: cluster, components, images, deploy, first checks.

    A second up changes nothing: objects changed since they were deployed are reported
    and left as they are (--reset puts them back)."""
    from kubelab.config import load_config
    from kubelab.errors import UsageError
    from kubelab.lessons.loader import display_path, find_lesson
    from kubelab.lessons.plan import build_plan, render_for_cluster, write_rendered
    from kubelab.providers.requirements import PROVIDERS

    # Flags, then the user's config file, then kubelab's defaults.
    config = load_config()
    provider = provider or config.provider or "sandbox"
    domain = domain or config.domain
    tls = config.tls if tls is None else tls
    email = email or config.email
    expose = config.expose_dashboards if expose_dashboards is None else expose_dashboards
    if tls and sys.stdin.isatty() and not options(ctx).json:
        # Interactive: ask for what TLS needs instead of failing.
        domain = domain or typer.prompt("Domain whose subdomains point at the cluster")
        email = email or typer.prompt("Email for the Let's Encrypt account")
    if provider not in PROVIDERS:
        raise UsageError(
            f"unknown provider {provider!r}", hint=f"Use one of: {', '.join(PROVIDERS)}."
        )
    if out is not None and not dry_run:
        raise UsageError("--out is only used with --dry-run", hint="Add --dry-run.")
    opts = options(ctx)
    loaded = find_lesson(lesson)
    if tls and not (domain and email):
        raise UsageError("--tls needs --domain and --email", hint="Add both, or drop --tls.")
    from kubelab.components.values import check_exposure

    check_exposure(domain, tls, expose)
    if charts is not None and not PROVIDERS[provider].installs_components:
        raise UsageError(
            f"--charts is for providers that install components; {provider} installs none",
            hint="Drop --charts, or use --provider existing or kind.",
        )
    folder = charts.expanduser().resolve() if charts is not None else None
    choices = {
        "domain": domain,
        "tls": tls,
        "email": email,
        "expose_dashboards": expose,
        "charts": folder,
        "reset": reset,
    }
    if reset and not dry_run and sys.stdin.isatty() and not opts.json:
        typer.confirm(
            f"--reset puts every object of {loaded.lesson.id} back as the lesson deploys it, "
            "undoing what was changed since (a student's work included). Continue?",
            abort=True,
        )
    if not dry_run:
        _up(opts, loaded, provider, choices)
        return
    from kubelab.components.values import InstallSettings
    from kubelab.providers import get_provider

    # The provider's own facts (registry address, kind's NodePort gateway and Gitea,
    # Hetzner's load balancer location): the plan shows what `up` on it installs.
    facts = get_provider(provider).facts()
    settings = InstallSettings.for_cluster(
        facts, domain=domain, tls=bool(tls), email=email, expose_dashboards=expose
    )
    installs = PROVIDERS[provider].installs_components
    rendered = render_for_cluster(loaded, facts, settings if installs else None)
    plan = build_plan(loaded, provider, rendered, charts=folder)
    components = []
    extras: list[dict[str, Any]] = []
    if installs:
        from kubelab.components.deploy import component_objects, component_plan, components_for

        archives = None
        if folder is not None:
            # The same checks as `up --charts`: a plan that would fail says so now.
            from kubelab.components.localcharts import lesson_archives

            chosen = components_for(loaded.lesson.components, settings)
            archives = lesson_archives(folder, loaded.lesson.id, chosen, bool(tls))
        components = component_plan(loaded.lesson.components, settings, archives)
        extras = component_objects(loaded.lesson.components, settings)
    with tempfile.TemporaryDirectory(prefix="kubelab-dry-run-") as tmp:
        target = out if out is not None else Path(tmp)
        write_rendered(rendered, target, plan, loaded.lesson.id, components, extras)
        objects = [
            {
                "kind": o.kind,
                "name": o.name,
                "namespace": o.namespace,
                "file": f"manifests/{o.filename()}",
            }
            for o in rendered.objects
        ]
        exposure = [_extra_json(entry) for entry in extras]
        if opts.json:
            print_json(
                {
                    "lesson": loaded.lesson.id,
                    "provider": provider,
                    "dry_run": True,
                    "steps": [
                        {"name": s.name, "description": s.description, "items": s.items}
                        for s in plan
                    ],
                    "components": components,
                    "objects": objects,
                    "component_objects": exposure,
                    "valid": True,
                    "out": str(out) if out is not None else None,
                }
            )
            return
        from rich.markup import escape

        con = console()
        con.print(f"[bold]Plan for {loaded.lesson.id}[/] on provider {provider} (dry run)")
        for number, step in enumerate(plan, 1):
            con.print(f"[bold]{number}. {step.name}[/]: {escape(step.description)}")
            for item in step.items:
                con.print(f"     - {escape(item)}")
        con.print(f"{len(objects)} objects rendered and valid.")
        if exposure:
            con.print("Applied beside the components, once they are ready:")
            for extra in exposure:
                where = f"{extra['namespace']}/" if extra["namespace"] else ""
                hosts = f" (hosts: {', '.join(extra['hosts'])})" if extra["hosts"] else ""
                con.print(f"     - {extra['kind']} {where}{extra['name']}{escape(hosts)}")
        for line in dashboard_lines(loaded, settings) if installs else []:
            con.print(f"  {line}")
        if out is not None:
            con.print(f"Written to {escape(display_path(out))}/ (manifests/, values/, plan.json).")
        else:
            con.print("Add --out DIR to keep the rendered files.")


def _up(opts: Options, loaded: LoadedLesson, provider_name: str, choices: dict[str, Any]) -> None:
    from rich.markup import escape

    from kubelab.lessons.runner import LessonRunner
    from kubelab.providers import get_provider
    from kubelab.providers.requirements import PROVIDERS
    from kubelab.state import StateStore

    provider = get_provider(provider_name)
    err = console(stderr=True)
    step_started = time.monotonic()

    def report(step: str, message: str) -> None:
        nonlocal step_started
        took = time.monotonic() - step_started
        step_started = time.monotonic()
        if not opts.json:
            err.print(f"[green]✓[/] [bold]{step}[/]: {escape(message)} [dim]({took:.1f}s)[/]")

    from kubelab.cli.progress import LiveTable

    live = LiveTable("components") if err.is_terminal and not opts.json else None
    runner = LessonRunner(loaded, provider, StateStore(), report, progress=live, options=choices)
    with live if live is not None else contextlib.nullcontext():
        result = runner.up()
    details = result.record.details
    first = result.first
    if opts.json:
        print_json(
            {
                "lesson": loaded.lesson.id,
                "provider": provider_name,
                "kubeconfig": details.get("kubeconfig"),
                "ingress": details.get("ingress"),
                "namespace": details.get("namespace"),
                "seconds": round(result.seconds, 2),
                "first_exercise": first.to_json() if first else None,
                # What this run changed, step by step (UpResult.changes): a second `up`
                # reports every component unchanged and 0 writes.
                "changes": result.changes(),
            }
        )
        return
    out = console()
    out.print(f"[bold green]{loaded.lesson.id} is ready[/] ({result.seconds:.1f}s).")
    if provider.lacks:
        out.print(provider.lacks)
    out.print(f"  export KUBECONFIG={details.get('kubeconfig')}")
    if details.get("ingress"):
        out.print(f"  ingress: {details.get('ingress')}")
    if PROVIDERS[provider_name].installs_components:
        for line in dashboard_lines(loaded, runner.settings()):
            out.print(f"  {line}")
    if first is not None:
        out.print(f"  first exercise ({first.exercise}): checks {first.status}")
        out.print("Start with: [bold]kubelab exercise[/]")
        return
    # No exercise can run on this provider (the sandbox lacks what every one of them needs).
    available = provider.available_components(loaded.lesson.components)
    exercises = loaded.on(provider).lesson.exercises
    missing = sorted({c for e in exercises for c in e.needed_components() - available})
    lesson_id = loaded.lesson.id
    out.print(
        f"[yellow]None of the {len(loaded.lesson.exercises)} exercises of {lesson_id} can run "
        f"on {provider_name}[/]: they need {escape(', '.join(missing))}."
    )
    out.print(
        f"Read them with [bold]kubelab show {lesson_id}[/]; do them on a real cluster: "
        f"[bold]kubelab up {lesson_id} --provider kind[/] (or --provider existing)."
    )


def dashboard_lines(loaded: LoadedLesson, settings: InstallSettings) -> list[str]:
    """Where the lesson's dashboards are, who can reach them and how to log in."""
    from rich.markup import escape

    from kubelab.components.deploy import components_for
    from kubelab.components.values import LOGIN_DASHBOARDS, public_url

    names = [c.name for c in components_for(loaded.lesson.components, settings) if c.ui]
    if not names:
        return []
    lines = [f"dashboards: kubelab open {' | '.join(names)}  (port-forward, on this machine)"]
    public = [url for name in names if (url := public_url(name, settings))]
    if public:
        lines.append(f"public:     {escape(', '.join(public))}")
    if any(name in LOGIN_DASHBOARDS for name in names):
        token = "kubelab open kiali --token-only" if public_url("kiali", settings) else ""
        lines.append(
            "Kiali asks for a token (view only): `kubelab open kiali` writes one"
            + (f", `{token}` for its public URL." if token else ".")
        )
    if settings.domain:
        hidden = [n for n in names if public_url(n, settings) is None]
        if hidden:
            lines.append(
                f"not exposed at *.{settings.domain}: {', '.join(hidden)}"
                + (
                    " (no login of their own)"
                    if settings.expose_dashboards
                    else " (--expose-dashboards serves Kiali, with a token login)"
                )
            )
    return lines


def _extra_json(entry: dict[str, Any]) -> dict[str, Any]:
    """One component object of the dry-run: what it is, and the hostnames it serves."""
    obj = entry["object"]
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    hosts = [h for server in spec.get("servers") or [] for h in server.get("hosts") or []]
    if obj.get("kind") == "VirtualService":
        hosts = list(spec.get("hosts") or [])
    from kubelab.lessons.plan import RenderedObject

    path = RenderedObject(entry["component"], obj).filename()
    return {
        "component": entry["component"],
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "hosts": hosts,
        "file": f"manifests/_components/{path}",
    }
