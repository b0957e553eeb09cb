"""CLI start-up budget: ``kubelab --help`` and ``kubelab lessons`` vs a bare typer app.

Run by hand: ``python benchmarks/bench_cli_startup.py [--runs 20]``. Each command runs
in a fresh interpreter (the one running this script) several times, interleaved so that
machine noise hits all of them alike; the median wall times are compared as ratios to
a one-command typer app's ``--help``. Budgets (DESIGN.md): --help <= 1.3x, lessons <= 2x.
"""

from __future__ import annotations

import argparse
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

BUDGETS = {"kubelab --help": 1.3, "kubelab lessons": 2.0}


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_typer_app.py"
        bare.write_text(BARE_APP)
        commands = {
            "bare typer --help": [sys.executable, str(bare), "--help"],
            "kubelab --help": [sys.executable, "-m", "kubelab", "--help"],
            "kubelab lessons": [sys.executable, "-m", "kubelab", "lessons"],
        }
        for cmd in commands.values():  # warm the file cache and .pyc files
            _time(cmd)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                times[name].append(_time(cmd))
    base = statistics.median(times["bare typer --help"])
    print(f"{'command':<20} {'median ms':>10} {'ratio':>7} {'budget':>7}")
    failed = False
    for name, samples in times.items():
        median = statistics.median(samples)
        ratio = median / base
        budget = BUDGETS.get(name)
        mark = "" if budget is None else ("ok" if ratio <= budget else "OVER")
        failed |= mark == "OVER"
        budget_text = f"{budget:.1f}x" if budget else "-"
        print(f"{name:<20} {median * 1000:>10.0f} {ratio:>6.2f}x {budget_text:>7} {mark}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
