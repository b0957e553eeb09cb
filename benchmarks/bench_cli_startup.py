"""CLI start-up budget: ``kubelab --help``, ``lessons`` and ``up --dry-run`` vs bare typer apps.

Run by hand: ``python benchmarks/bench_cli_startup.py [--runs 20]``. Each command runs
in a fresh interpreter (the one running this script) several times, interleaved so that
machine noise hits all of them alike; the median wall times are compared as ratios to
two floors, both printed:

* ``bare typer --help``: a one-command typer app with typer's defaults (rich help on);
* ``bare typer like kubelab --help``: the same app configured as kubelab is (rich help
  and pretty exceptions off, completion on, kubelab's global options). The budgets are
  against this one, the honest floor.

Budgets (issue 13): --help <= 1.3x, lessons <= 2.0x, up --dry-run <= 3.0x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_APP = """
import typer

app = typer.Typer()


@app.command()
def main(name: str = "world") -> None:
    print(f"hello {name}")


if __name__ == "__main__":
    app()
"""

# The same configuration and global options as kubelab/cli/main.py, one command.
LIKE_KUBELAB = """
import sys
from enum import Enum
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Output(str, Enum):
    table = "table"
    json = "json"


def _version(value: bool) -> None:
    if value:
        sys.stdout.write("0\\n")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Narrate.")] = False,
    output: Annotated[Output, typer.Option("--output", "-o", help="Format.")] = Output.table,
    lang: Annotated[str | None, typer.Option("--lang", help="Language.")] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Version.")
    ] = False,
) -> None:
    pass


@app.command()
def hello(name: str = "world") -> None:
    print(f"hello {name}")


if __name__ == "__main__":
    app()
"""

FLOOR = "bare typer like kubelab --help"
BUDGETS = {"kubelab --help": 1.3, "kubelab lessons": 2.0, "kubelab up --dry-run": 3.0}


# As installed (pip and pipx compile the package), imports read cached bytecode: the
# warm-up run writes it even where the environment asks Python not to.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_typer_app.py"
        bare.write_text(BARE_APP)
        like = Path(tmp) / "like_kubelab.py"
        like.write_text(LIKE_KUBELAB)
        commands = {
            "bare typer --help": [sys.executable, str(bare), "--help"],
            FLOOR: [sys.executable, str(like), "--help"],
            "kubelab --help": [sys.executable, "-m", "kubelab", "--help"],
            "kubelab lessons": [sys.executable, "-m", "kubelab", "lessons"],
            "kubelab up --dry-run": [
                sys.executable,
                "-m",
                "kubelab",
                "up",
                "istio-traffic-splitting",
                "--dry-run",
            ],
        }
        # A home of its own: `lessons` keeps its listing there (kubelab/lessons/index.py).
        env = {**ENV, "KUBELAB_HOME": str(Path(tmp) / "home")}
        for cmd in commands.values():  # warm the file cache, .pyc files, lesson listing
            _time(cmd, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                times[name].append(_time(cmd, env))
    rich = statistics.median(times["bare typer --help"])
    base = statistics.median(times[FLOOR])
    header = f"{'command':<32} {'median ms':>10} {'vs typer':>9} {'vs like':>8} {'budget':>7}"
    print(header)
    failed = False
    for name, samples in times.items():
        median = statistics.median(samples)
        ratio = median / base
        budget = BUDGETS.get(name)
        mark = "" if budget is None else ("ok" if ratio <= budget else "OVER")
        failed |= mark == "OVER"
        budget_text = f"{budget:.1f}x" if budget else "-"
        print(
            f"{name:<32} {median * 1000:>10.0f} {median / rich:>8.2f}x {ratio:>7.2f}x "
            f"{budget_text:>7} {mark}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
