"""The CLI builds only the command it runs: `kubelab --help` imports no command module,
and every entry of the command table names a command that exists."""

from __future__ import annotations

import json
import subprocess
import sys

import typer
from typer.core import TyperGroup

from kubelab.cli.main import COMMANDS, app

PROBE = """
import json, sys
from kubelab.cli.main import run
try:
    run({args!r})
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith("kubelab.cli."))))
print("pydantic" in sys.modules)
"""


def _modules_after(args: list[str]) -> tuple[list[str], bool]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    *_, modules, pydantic = proc.stdout.strip().splitlines()
    return json.loads(modules), pydantic == "True"


def test_help_imports_no_command_module():
    modules, pydantic = _modules_after(["--help"])
    assert modules == ["kubelab.cli.common", "kubelab.cli.main"]
    assert not pydantic


def test_a_command_imports_only_its_module():
    modules, _ = _modules_after(["validate", "--help"])
    assert modules == ["kubelab.cli.common", "kubelab.cli.lessons", "kubelab.cli.main"]


def test_every_entry_is_a_command_with_its_summary():
    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    assert root.list_commands(ctx) == list(COMMANDS)
    for name, entry in COMMANDS.items():
        command = root.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(200) == entry.summary
        assert command.hidden is entry.hidden
        # A module's typer.Typer is a group even with one command (`kubelab charts pull`).
        assert (entry.attribute == "app") is isinstance(command, TyperGroup), name
        assert len(name) + len(entry.summary) <= 68, f"{name}: cut in an 80-column --help"


def test_help_lists_the_visible_commands_and_suggests_close_names():
    proc = subprocess.run(
        [sys.executable, "-m", "kubelab", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = [
        line.split()[0] for line in proc.stdout.split("Commands:")[1].splitlines() if line.strip()
    ]
    assert listed == [n for n, e in COMMANDS.items() if not e.hidden]
    typo = subprocess.run(
        [sys.executable, "-m", "kubelab", "chek"], capture_output=True, text=True, timeout=60
    )
    assert typo.returncode == 2 and "Did you mean 'check'?" in typo.stderr


def test_dry_run_and_validate_never_import_pydantic():
    # pydantic's import and first models cost about 200 ms, more than the rest of
    # `up --dry-run` (docs/benchmarks.md): lessons, checks and state are msgspec structs.
    for args in (["up", "istio-traffic-splitting", "--dry-run"], ["validate", "labs"]):
        _, pydantic = _modules_after(args)
        assert not pydantic, args
