"""``kubelab lessons``, ``kubelab show`` and ``kubelab validate``: the catalogue and its files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kubelab.cli.common import complete_lesson, console, options, print_json


def list_lessons(ctx: typer.Context) -> None:
    """List the lessons: id, title, components and number of exercises."""
    from kubelab.lessons.index import lesson_listing

    opts = options(ctx)
    lessons = lesson_listing()
    if opts.json:
        print_json([{**lesson, "title": lesson["title"][opts.lang]} for lesson in lessons])
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("LESSON", "TITLE", "COMPONENTS", "EXERCISES"):
        table.add_column(
            column,
            justify="right" if column == "EXERCISES" else "left",
            no_wrap=column == "LESSON",
        )
    for lesson in lessons:
        table.add_row(
            lesson["id"],
            lesson["title"][opts.lang],
            ", ".join(lesson["components"]),
            str(lesson["exercises"]),
        )
    console().print(table)


def show(
    ctx: typer.Context,
    lesson: Annotated[
        str,
        typer.Argument(
            help="Lesson id (see `kubelab lessons`) or folder.", autocompletion=complete_lesson
        ),
    ],
) -> None:
    """Show a lesson: overview, prerequisites, components and exercises."""
    from kubelab.components.catalog import CATALOG
    from kubelab.lessons.loader import find_lesson

    opts = options(ctx)
    lang = opts.lang
    loaded = find_lesson(lesson)
    data = loaded.lesson
    if opts.json:
        print_json(
            {
                "id": data.id,
                "title": data.title.get(lang),
                "summary": data.summary.get(lang),
                "prerequisites": [p.get(lang) for p in data.prerequisites],
                "components": data.components,
                "exercises": [
                    {
                        "id": e.id,
                        "title": e.title.get(lang),
                        "checks": [e.check_id(i) for i in range(len(e.checks))],
                        "requires": sorted(e.needed_components()),
                    }
                    for e in data.exercises
                ],
            }
        )
        return
    from rich.markdown import Markdown

    heading = {
        "pt": ("Pré-requisitos", "Componentes", "Exercícios"),
        "en": ("Prerequisites", "Components", "Exercises"),
    }[lang]
    parts = [f"# {data.title.get(lang)}", data.summary.get(lang).strip()]
    if data.prerequisites:
        parts.append(f"## {heading[0]}")
        parts.append("\n".join(f"- {p.get(lang)}" for p in data.prerequisites))
    parts.append(f"## {heading[1]}")
    parts.append(
        "\n".join(f"- **{name}**: {CATALOG[name].description}" for name in data.components)
    )
    parts.append(f"## {heading[2]}")
    parts.append(
        "\n".join(
            f"{i}. **{e.title.get(lang)}** (`{e.id}`)" for i, e in enumerate(data.exercises, 1)
        )
    )
    console().print(Markdown("\n\n".join(parts)), soft_wrap=False)


def validate(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(help="A lesson.yaml, a lesson folder or a folder of lessons.")
    ],
    render: Annotated[
        bool,
        typer.Option(
            "--render", help="Also render the lesson's charts and validate every object (helm)."
        ),
    ] = False,
) -> None:
    """Validate lesson files; one line per problem: file:line: field: message."""
    from kubelab.errors import ExitCode, KubelabError, ValidationFailed
    from kubelab.lessons.loader import display_path, lesson_files, load_lesson

    opts = options(ctx)
    files = lesson_files(path)
    if not files:
        raise ValidationFailed(
            f"no lesson.yaml found in {display_path(path)}",
            hint="A lesson is a folder holding a lesson.yaml.",
        )
    results: list[dict[str, Any]] = []
    for file in files:
        entry: dict[str, Any] = {"file": display_path(file), "valid": True, "problems": []}
        try:
            loaded = load_lesson(file)
            entry["id"] = loaded.lesson.id
            if render:
                from kubelab.lessons.plan import render as render_lesson

                render_lesson(loaded)
        except ValidationFailed as err:
            entry["valid"] = False
            entry["problems"] = err.details or [err.message]
        except KubelabError:
            raise
        results.append(entry)
    invalid = [r for r in results if not r["valid"]]
    if opts.json:
        print_json({"valid": not invalid, "lessons": results})
    else:
        out, err_out = console(), console(stderr=True)
        from rich.markup import escape

        for r in results:
            if r["valid"]:
                out.print(f"[green]ok[/]    {escape(r['file'])} ({r['id']})")
            for line in r["problems"]:
                err_out.print(escape(line))
        if invalid:
            total = sum(len(r["problems"]) for r in invalid)
            err_out.print(
                f"[bold red]error:[/] {len(invalid)} of {len(results)} lesson file(s) invalid, "
                f"{total} problem(s)"
            )
    if invalid:
        raise typer.Exit(int(ExitCode.USAGE))
