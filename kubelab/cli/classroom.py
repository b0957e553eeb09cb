"""``kubelab class create|kubeconfigs|status|delete`` and ``kubelab grade``: one class on one
cluster, every student in their own namespace, graded all at once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from kubelab.cli.common import console, options, print_json
from kubelab.i18n import _

app = typer.Typer(
    name="class",
    help="Give every student of a roster a namespace and a kubeconfig; remove them.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


class Lms(StrEnum):
    """The layouts of `kubelab grade --output csv --lms ...` (kubelab.classroom.report.LMS,
    repeated here so that `kubelab --help` does not import the reports)."""

    generic = "generic"
    moodle = "moodle"
    canvas = "canvas"
    google_classroom = "google-classroom"


LessonArg = Annotated[str | None, typer.Argument(help="Lesson id (default: the only class).")]
HoursOption = Annotated[
    float, typer.Option("--hours", help="How long the students' tokens are valid (1-168).")
]


def _service(lesson: str | None, *, need_class: bool = True, roster: Path | None = None) -> Any:
    """The class service of ``lesson``; a ``roster`` is read first, so a bad one is said
    before anything needs the lesson's cluster."""
    from kubelab.classroom.roster import load_roster
    from kubelab.classroom.service import ClassService, tools_for
    from kubelab.errors import UsageError
    from kubelab.lessons.loader import find_lesson
    from kubelab.state import StateStore

    store = StateStore()
    if lesson is None:
        classes = list(store.load().classes)
        if len(classes) != 1 or not need_class:
            raise UsageError(
                "name the lesson" + (f" (classes: {', '.join(classes)})" if classes else ""),
                hint="e.g. kubelab class status istio-traffic-splitting",
            )
        lesson = classes[0]
    loaded = find_lesson(lesson)
    if roster is not None:
        load_roster(roster)
    progress = console(stderr=True)
    return ClassService(
        loaded, store, tools_for(loaded, store), lambda line: progress.print(f"  {line}")
    )


def _open_api(lesson: str, allow_from: list[str]) -> str | None:
    """On a Hetzner cluster kubelab made, its firewall admits the Kubernetes API only from
    the instructor's address: open it to ``allow_from``, or say the students need it.
    Returns the line to print (None where the cluster has no firewall of kubelab's)."""
    from kubelab.errors import UsageError
    from kubelab.state import StateStore

    state = StateStore().load()
    record = state.lessons.get(lesson)
    provider = record.provider if record is not None else None
    # The lesson may run on a Hetzner cluster kubelab made with `--provider existing`
    # (`kubelab cluster create`, then its kubeconfig): that cluster's firewall counts too.
    kubeconfig = str((record.details if record else {}).get("kubeconfig") or "")
    made = next(
        (
            c
            for c in state.clusters.values()
            if c.provider == "hetzner" and kubeconfig and c.kubeconfig == kubeconfig
        ),
        None,
    )
    if made is not None:
        provider = "hetzner"
    if provider != "hetzner":
        if allow_from:
            raise UsageError(
                "--allow-from opens the firewall of a Hetzner cluster kubelab made; "
                f"this lesson runs on {provider or 'no cluster'}",
                hint="Drop --allow-from: open the API to the students in your cluster's own "
                "network settings.",
            )
        return None
    from kubelab.providers.hetzner import DEFAULT_NAME, HetznerCluster

    assert record is not None
    name = made.name if made is not None else str(record.details.get("cluster") or DEFAULT_NAME)
    if not allow_from:
        return (
            f"! Hetzner cluster {name}: its Kubernetes API answers only your address. Students "
            "elsewhere cannot use their kubeconfig until you run `kubelab class create ... "
            "--allow-from CIDR` with their network (or 0.0.0.0/0: the token is then the "
            "only lock)."
        )
    sources = HetznerCluster().allow_api_from(name, allow_from)
    return f"✓ Kubernetes API of {name} open to {', '.join(sources)}"


def _students_json(record: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": s.id,
            "name": s.name,
            "email": s.email,
            "namespace": s.namespace,
            "kubeconfig": s.kubeconfig,
            "token_expires": s.token_expires,
        }
        for s in record.students
    ]


@app.command("create")
def create(
    ctx: typer.Context,
    lesson: Annotated[str, typer.Argument(help="Lesson id; `kubelab up` it first.")],
    roster: Annotated[
        Path, typer.Option("--roster", help="CSV with columns id,name,email (one per student).")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the students' kubeconfig files.")
    ] = Path("kubeconfigs"),
    hours: HoursOption = 12.0,
    allow_from: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-from",
            help="Hetzner: also open the Kubernetes API to this network (CIDR, repeatable), "
            "where the students work; 0.0.0.0/0 leaves their token as the only lock.",
        ),
    ] = None,
) -> None:
    """Per student: namespace, app, limited ServiceAccount and a kubeconfig file (0600)."""
    opts = options(ctx)
    service = _service(lesson, roster=roster)
    opened = _open_api(lesson, allow_from or [])
    record = service.create(roster, out, hours)
    if opts.json:
        print_json({"lesson": record.lesson, "students": _students_json(record)})
        return
    out_console = console()
    out_console.print(
        f"[green]✓[/] class of {record.lesson}: {len(record.students)} students; "
        f"kubeconfigs in {record.out_dir}"
    )
    if opened is not None:
        out_console.print(opened, markup=False)
    out_console.print(
        "Give each student their file: `export KUBECONFIG=<id>.kubeconfig`. Tokens end at "
        f"{min(s.token_expires or '' for s in record.students)}; "
        f"`kubelab class kubeconfigs {record.lesson}` issues new ones."
    )


@app.command("kubeconfigs")
def kubeconfigs(
    ctx: typer.Context,
    lesson: LessonArg = None,
    hours: HoursOption = 12.0,
    student: Annotated[
        list[str] | None, typer.Option("--student", help="Only this student id (repeatable).")
    ] = None,
) -> None:
    """Issue fresh tokens: new kubeconfig files for the class (or some students)."""
    opts = options(ctx)
    service = _service(lesson)
    record = service.renew(hours, student or ())
    if opts.json:
        print_json({"lesson": record.lesson, "students": _students_json(record)})
        return
    console().print(f"[green]✓[/] new kubeconfigs in {record.out_dir}")


@app.command("status")
def status(ctx: typer.Context, lesson: LessonArg = None) -> None:
    """The class's students, namespaces, and whose kubeconfig expired or expires soon."""
    from kubelab.classroom.service import expiry_lines

    opts = options(ctx)
    record = _service(lesson).record()
    warnings = expiry_lines(record)
    if opts.json:
        print_json(
            {"lesson": record.lesson, "students": _students_json(record), "warnings": warnings}
        )
        return
    out = console()
    out.print(
        f"class of {record.lesson}: {len(record.students)} students, files in {record.out_dir}"
    )
    for s in record.students:
        out.print(f"  {s.id:<20} {s.namespace:<36} token until {s.token_expires}")
    for line in warnings:
        out.print(f"[yellow]![/] {line}")
    if warnings:
        out.print(f"[bold]hint:[/] kubelab class kubeconfigs {record.lesson}")


@app.command("join")
def join(
    ctx: typer.Context,
    kubeconfig: Annotated[Path, typer.Argument(help="The kubeconfig file your instructor gave.")],
) -> None:
    """Students: use your class kubeconfig with kubelab exercise/hint/check/progress."""
    from kubelab.classroom.service import join_class

    opts = options(ctx)
    record = join_class(kubeconfig)
    details = record.details
    if opts.json:
        print_json({"lesson": record.lesson, **{k: details[k] for k in ("student", "namespace")}})
        return
    console().print(
        f"[green]✓[/] joined the class of {record.lesson} as {details['student']}: you work in "
        f"namespace {details['namespace']} (token valid until {details['expires']})."
    )
    console().print(
        f"Run [bold]export KUBECONFIG={kubeconfig.resolve()}[/] for kubectl, then "
        "[bold]kubelab exercise[/]."
    )


@app.command("delete")
def delete(ctx: typer.Context, lesson: LessonArg = None) -> None:
    """Remove every student's namespace (with what is in it) and kubeconfig file."""
    opts = options(ctx)
    done = _service(lesson).delete()
    if opts.json:
        print_json({"removed": done})
        return
    out = console()
    for line in done:
        out.print(f"[green]✓[/] {line}")
    out.print("Done." if done else "Nothing to remove.")


def grade(
    ctx: typer.Context,
    lesson: LessonArg = None,
    roster: Annotated[
        Path | None,
        typer.Option("--class", help="Roster CSV: grade these students (default: the class)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the report to this file.")
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Exercises graded at once.")
    ] = 64,
    deadline: Annotated[
        float, typer.Option("--deadline", min=1, help="Seconds allowed per student.")
    ] = 300.0,
    save: Annotated[
        bool,
        typer.Option(
            "--save/--no-save",
            help="Store this run as a progress snapshot (whole-class runs only, not --class).",
        ),
    ] = True,
    lms: Annotated[
        Lms | None,
        typer.Option(
            "--lms",
            help="Gradebook layout of --output csv: moodle, canvas, google-classroom or "
            "generic (default).",
        ),
    ] = None,
) -> None:
    """Grade every student's exercises at once: table, json, junit, html or csv (a
    gradebook for Moodle, Canvas or Google Classroom) report."""
    from kubelab.classroom import report
    from kubelab.classroom.grade import GradeOptions
    from kubelab.classroom.service import load_history, save_snapshot
    from kubelab.errors import UsageError

    opts = options(ctx, ("table", "json", "junit", "html", "csv"))
    if opts.output.value == "table" and out is not None:
        raise UsageError(_("--out needs --output json, junit, html or csv"))
    if lms is not None and opts.output.value != "csv":
        raise UsageError(
            _("--lms chooses the layout of a gradebook CSV: it needs --output csv"),
            hint=_("e.g. kubelab grade --output csv --lms {lms} --out grades.csv").format(
                lms=lms.value
            ),
        )
    service = _service(lesson)
    students = service.students(roster)
    err = console(stderr=True)
    err.print(f"grading {len(students)} students ...")
    with _grading_progress(err, len(students)) as on_student:
        result = service.grade(
            students,
            GradeOptions(concurrency=concurrency, student_deadline=deadline, on_student=on_student),
            lang=opts.lang,
        )
    if save and roster is None:  # progress over time compares runs of the whole class
        save_snapshot(result)
    fmt = opts.output.value
    if fmt == "table":
        console().print(report.table(result))
        return
    if fmt == "json":
        import json

        text = json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "junit":
        text = report.junit(result)
    elif fmt == "csv":
        text = report.gradebook_csv(result, (lms or Lms.generic).value)
    else:
        text = report.html_report(result, load_history(result.lesson))
    if out is None:
        import sys

        sys.stdout.write(text)
        return
    # A CSV's own CRLF line ends (RFC 4180) are written as they are on every system.
    out.write_text(text, encoding="utf-8", newline="" if fmt == "csv" else None)
    err.print(f"[green]✓[/] {fmt} report written to {out}")


@contextlib.contextmanager
def _grading_progress(err: Any, total: int) -> Iterator[Callable[[int, int], None]]:
    """How far grading is: a bar that updates in place in a terminal, else a line at
    every tenth of the class (a log keeps a few lines, not one per student)."""
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress(
            "graded", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        ) as bar:
            task = bar.add_task("grade", total=total)
            yield lambda done, _total: bar.update(task, completed=done)
        return
    step = max(1, total // 10)

    def line(done: int, all_: int) -> None:
        if done % step == 0 or done == all_:
            err.print(f"  graded {done}/{all_}")

    yield line
