"""``kubelab up LESSON``: the lesson's lifecycle; ``--dry-run`` plans and renders only."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from kubelab.cli.common import console, options, print_json


def up(
    ctx: typer.Context,
    lesson: Annotated[str, typer.Argument(help="Lesson id (see `kubelab lessons`) or folder.")],
    provider: Annotated[
        str, typer.Option("--provider", "-p", help="existing, kind, hetzner or gke.")
    ] = "existing",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan and render every object; touch nothing."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="With --dry-run: write the rendered objects and values here."),
    ] = None,
) -> None:
    """Set up a lesson: cluster, components, images, deploy, first checks."""
    from kubelab.errors import SetupError, UsageError
    from kubelab.lessons.loader import display_path, find_lesson
    from kubelab.lessons.plan import build_plan, render, write_rendered
    from kubelab.providers.requirements import PROVIDERS

    if provider not in PROVIDERS:
        raise UsageError(
            f"unknown provider {provider!r}", hint=f"Use one of: {', '.join(PROVIDERS)}."
        )
    if out is not None and not dry_run:
        raise UsageError("--out is only used with --dry-run", hint="Add --dry-run.")
    if not dry_run:
        raise SetupError(
            "this version of kubelab can only plan and render lessons",
            hint=f"Run `kubelab up {lesson} --dry-run --out DIR` to see and validate what "
            "would be deployed.",
        )
    opts = options(ctx)
    loaded = find_lesson(lesson)
    rendered = render(loaded)
    plan = build_plan(loaded, provider, rendered)
    with tempfile.TemporaryDirectory(prefix="kubelab-dry-run-") as tmp:
        target = out if out is not None else Path(tmp)
        write_rendered(rendered, target, plan, loaded.lesson.id)
        objects = [
            {
                "kind": o.kind,
                "name": o.name,
                "namespace": o.namespace,
                "file": f"manifests/{o.filename()}",
            }
            for o in rendered.objects
        ]
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
                    "objects": objects,
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
        if out is not None:
            con.print(f"Written to {escape(display_path(out))}/ (manifests/, values/, plan.json).")
        else:
            con.print("Add --out DIR to keep the rendered files.")
