"""The ``kubelab`` command: global options, command wiring and the one error handler.

``run()`` is the console-script entry point. Errors raised below the CLI are
:class:`~kubelab.errors.KubelabError` and are printed here as ``error: ...`` plus a
hint, with their exit code; a traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from kubelab import __version__, i18n
from kubelab.cli import (
    charts,
    classroom,
    cluster,
    doctor,
    gke_token,
    lessons,
    lessontest,
    lifecycle,
    student,
    toolscmd,
    up,
)
from kubelab.cli.common import Options, OutputFormat, console
from kubelab.errors import ExitCode, KubelabError
from kubelab.i18n import _, detect_lang

app = typer.Typer(
    name="kubelab",
    help="Hands-on Kubernetes lessons: cluster, mesh, demo app, guided exercises, grading.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"kubelab {__version__}\n")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Narrate what happens; tracebacks on errors.")
    ] = False,
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--output",
            "-o",
            help="table for people, json for machines (junit: test, grade; html: grade).",
        ),
    ] = OutputFormat.table,
    lang: Annotated[
        str | None,
        typer.Option("--lang", help="Language of lesson text: pt or en (default: from LANG)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Global options; they may also be given after the command name."""
    try:
        chosen = detect_lang(lang)
    except ValueError:
        raise typer.BadParameter(
            f"{lang!r} is not a language; use pt or en", param_hint="--lang"
        ) from None
    i18n.use(chosen)
    ctx.obj = Options(verbose=verbose, output=output, lang=chosen)


app.command("lessons")(lessons.list_lessons)
app.command("show")(lessons.show)
app.command("validate")(lessons.validate)
app.command("doctor")(doctor.doctor)
app.command("up")(up.up)
app.command("down")(lifecycle.down)
app.command("status")(lifecycle.status)
app.command("open")(lifecycle.open_component)
app.command("exercise")(student.exercise)
app.command("hint")(student.hint)
app.command("check")(student.check)
app.command("progress")(student.progress)
app.command("solve")(student.solve)
app.command("test")(lessontest.test)
app.add_typer(cluster.app, name="cluster")
app.add_typer(charts.app, name="charts")
app.add_typer(toolscmd.app, name="tools")
app.add_typer(classroom.app, name="class")
app.command("grade")(classroom.grade)
# The kubeconfig of a GKE cluster runs this for tokens (an exec credential plugin).
app.command("gke-token", hidden=True)(gke_token.gke_token)

_GLOBAL_FLAGS = {"--verbose", "-v"}
_GLOBAL_OPTIONS = {"--output", "-o", "--lang"}


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options found after the command name to the front.

    ``kubelab check --output json`` then means the same as ``kubelab --output json
    check``, as users expect. Everything after ``--`` is left alone.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if arg in _GLOBAL_FLAGS or (name in _GLOBAL_OPTIONS and "=" in arg):
            front.append(arg)
        elif arg in _GLOBAL_OPTIONS and i + 1 < len(args):
            front.extend(args[i : i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def report_error(err: KubelabError, verbose: bool) -> None:
    """Print ``err`` for a person: message, one line per detail, then what to do."""
    out = console(stderr=True)
    from rich.markup import escape

    error, hint = _("error:"), _("hint:")
    out.print(f"[bold red]{error}[/] {escape(err.message)}")
    for line in err.details:
        out.print(f"  {escape(line)}")
    if err.hint:
        out.print(f"[bold]{hint}[/] {escape(err.hint)}")
    if verbose and err.__cause__ is not None:
        out.print_exception()


def run(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, report errors; returns (and exits with) the exit code."""
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    verbose = any(a in _GLOBAL_FLAGS for a in args)
    code: int
    try:
        # Standalone mode: typer/click print usage errors themselves (exit 2) and end
        # with SystemExit; only kubelab's own errors and bugs reach the handlers below.
        app(args=args, prog_name="kubelab")
        code = ExitCode.OK
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KubelabError as err:
        report_error(err, verbose)
        code = err.exit_code
    except KeyboardInterrupt:
        console(stderr=True).print("interrupted; run the same command again to resume")
        code = 130
    except Exception as exc:  # a bug: one line unless --verbose
        if verbose:
            console(stderr=True).print_exception()
        console(stderr=True).print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
            "[bold]hint:[/] run again with --verbose and report the traceback."
        )
        code = ExitCode.SETUP
    if argv is None:
        sys.exit(code)
    return int(code)
