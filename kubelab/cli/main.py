"""The ``kubelab`` command: global options, command wiring and the one error handler.

``run()`` is the console-script entry point. Errors raised below the CLI are
:class:`~kubelab.errors.KubelabError` and are printed here as ``error: ...`` plus a
hint, with their exit code; a traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any, NamedTuple

import typer
from typer.core import TyperGroup

from kubelab import __version__, i18n
from kubelab.cli.common import Options, OutputFormat, console
from kubelab.errors import ExitCode, KubelabError
from kubelab.i18n import _, detect_lang


class Entry(NamedTuple):
    """A command of ``kubelab``: where it lives and its line in ``kubelab --help``."""

    module: str  # under kubelab.cli
    attribute: str  # a command function, or a typer.Typer for a group of commands
    summary: str
    hidden: bool = False


# The commands, in the order of `kubelab --help`. Each module is imported only when its
# command runs (or completes), so `kubelab --help` and every command pay for one module
# instead of all of them. The summary is the command's short help.
COMMANDS: dict[str, Entry] = {
    "lessons": Entry(
        "lessons", "list_lessons", "List the lessons, their components and exercises."
    ),
    "show": Entry("lessons", "show", "Show a lesson: overview, components and exercises."),
    "validate": Entry("lessons", "validate", "Validate lesson files (file:line: problem)."),
    "doctor": Entry("doctor", "doctor", "Check tools and credentials for a provider."),
    "up": Entry("up", "up", "Set up a lesson: cluster, components, app, first checks."),
    "down": Entry("lifecycle", "down", "Remove what `kubelab up` created for a lesson."),
    "status": Entry("lifecycle", "status", "What is running: lessons, provider, progress."),
    "open": Entry("lifecycle", "open_component", "Open a dashboard through a port-forward."),
    "exercise": Entry("student", "exercise", "Show what to do now (or the exercise named)."),
    "hint": Entry("student", "hint", "Show one more hint each time it is called."),
    "check": Entry("student", "check", "Check the exercise; exit 0 when it passes."),
    "progress": Entry("student", "progress", "Where you are: every exercise and its result."),
    "solve": Entry("student", "solve", "Run the exercise's solve script (instructors)."),
    "graph": Entry("graph", "graph", "Live traffic graph of the mesh, from its metrics."),
    "traces": Entry("traces", "traces", "Recent traces of a service, as waterfalls."),
    "test": Entry("lessontest", "test", "Test a lesson end to end in its own sandbox."),
    "grade": Entry("classroom", "grade", "Grade a class: table, json, junit, html or csv."),
    "cluster": Entry("cluster", "app", "Create and delete clusters on Hetzner or GKE."),
    "charts": Entry("charts", "app", "Download the lessons' pinned Helm charts."),
    "tools": Entry("toolscmd", "app", "Install the pinned helm and kubectl."),
    "class": Entry("classroom", "app", "Namespaces and kubeconfigs for a class."),
    # The kubeconfig of a GKE cluster runs this for tokens (an exec credential plugin).
    "gke-token": Entry("gke_token", "gke_token", "Print a GKE access token.", hidden=True),
}


class LazyCommands(MutableMapping[str, Any]):
    """The subcommands of ``kubelab``: every name known, each built on first lookup."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            entry = COMMANDS[name]
            module = importlib.import_module(f"kubelab.cli.{entry.module}")
            target = getattr(module, entry.attribute)
            command: Any
            if isinstance(target, typer.Typer):  # a group, even of one command (charts)
                command = typer.main.get_group(target)
                command.short_help = entry.summary
            else:
                single = typer.Typer(rich_markup_mode=None)
                single.command(name, short_help=entry.summary, hidden=entry.hidden)(target)
                command = typer.main.get_command(single)
            command.name = name
            self._built[name] = command
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        raise TypeError(f"kubelab's commands are listed in COMMANDS, not added ({name})")

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"kubelab's commands are listed in COMMANDS ({name})")

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class LazyGroup(TyperGroup):
    """kubelab's root command: its subcommands come from :data:`COMMANDS`, built lazily
    (typer's "did you mean" and completion look names up in ``commands``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands()

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, e.summary) for name, e in COMMANDS.items() if not e.hidden]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    cls=LazyGroup,
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
            help="table for people, json for machines (junit: test, grade; html, csv: grade).",
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


def _environment_error(exc: OSError) -> KubelabError:
    """An OSError no command turned into an answer, said as what the machine refused."""
    import errno

    from kubelab import paths
    from kubelab.errors import SetupError

    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if exc.filename is None and not full and exc.errno != errno.EROFS:
        # A connection, not a file (a write to a full disk names no file either).
        return SetupError(
            _("cannot reach the network service: {problem}").format(problem=exc),
            hint=_("Check the network and the service's address, then run the same command again."),
        )
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    problem = exc.strerror or type(exc).__name__
    if full:
        hint = _(
            "Free some disk space where kubelab writes ({home} and the temporary folder), "
            "then run the same command again."
        ).format(home=paths.home_path())
    else:
        hint = _(
            "kubelab keeps its files in {home} (set KUBELAB_HOME to change it): it must be a "
            "folder you can write to. Check the path above, then run the same command again."
        ).format(home=paths.home_path())
    return SetupError(f"{problem}: {where}" if where else problem, hint=hint)


_python_showwarning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
    """kubelab's own warnings as one ``warning:`` line; others as Python shows them."""
    from kubelab.errors import KubelabWarning

    if issubclass(category, KubelabWarning):
        from rich.markup import escape

        console(stderr=True).print(f"[yellow]warning:[/] {escape(str(message))}")
    else:
        _python_showwarning(message, category, *args, **kw)


def run(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, report errors; returns (and exits with) the exit code."""
    warnings.showwarning = _show_warning
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
    except OSError as exc:  # the machine said no: a full disk, a read-only home, a folder...
        report_error(_environment_error(exc), verbose)
        code = ExitCode.SETUP
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
