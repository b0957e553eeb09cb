"""How long a student waits for a verdict: checks through the CLI, and `kubelab test`.

Run by hand: ``python benchmarks/bench_checks.py [--runs 3]``. Each run uses a fresh
kubelab home: `kubelab up` in the sandbox, then v1 is made to hang (40 requests to /, as
the student's own loop does), then each command below is timed as the student types it.
Budgets (issue 13): a clearly failing check decides in at most 5 s with v1 hung, a passing
one in at most 3 s, `kubelab test istio-traffic-splitting --provider sandbox` in at most 20 s.
Everything runs on 127.0.0.1 and is stopped by `kubelab down`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESSON = "istio-traffic-splitting"


def kubelab(env: dict[str, str], *args: str) -> tuple[float, int]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kubelab", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return time.monotonic() - started, proc.returncode


def kubectl(env: dict[str, str], *args: str) -> None:
    tools = ROOT / ".tools" / "bin"
    subprocess.run([str(tools / "kubectl"), *args], env=env, check=True, capture_output=True)


def weights(env: dict[str, str], v1: int, v2: int) -> None:
    patch = (
        f'[{{"op":"replace","path":"/spec/http/0/route/0/weight","value":{v1}}},'
        f'{{"op":"replace","path":"/spec/http/0/route/1/weight","value":{v2}}}]'
    )
    kubectl(
        env, "patch", "virtualservice", "app-backend", "-n", "istio", "--type=json", f"-p={patch}"
    )
    time.sleep(1.0)


def hang_v1(ingress: str) -> None:
    """40 requests to / through the sandbox's gateway: v1 (30 before it hangs) is hung."""
    for _ in range(40):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{ingress}/", timeout=0.5).read()


def one_run() -> dict[str, float]:
    import json

    home = tempfile.mkdtemp(prefix="kubelab-bench-checks-")
    env = {**os.environ, "KUBELAB_HOME": home, "KUBECONFIG": f"{home}/sandbox/kubeconfig"}
    times: dict[str, float] = {}
    try:
        assert kubelab(env, "up", LESSON)[1] == 0
        status = subprocess.run(
            [sys.executable, "-m", "kubelab", "status", "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        hang_v1(json.loads(status.stdout)["ingress"])
        runs = [
            (
                "passing split (observe-initial-split), v1 hung",
                ("check", "observe-initial-split"),
                0,
            ),
            ("failing split (split-50-50 at 90/10), v1 hung", ("check", "split-50-50"), 1),
            ("failing confirm-stable at 90/10, v1 hung", ("check", "confirm-stable"), 1),
        ]
        for name, args, code in runs:
            times[name], got = kubelab(env, *args)
            assert got == code, (name, got)
        weights(env, 0, 100)
        times["passing confirm-stable at 0/100 (300 requests)"], got = kubelab(
            env, "check", "confirm-stable"
        )
        assert got == 0
        assert kubelab(env, "down")[1] == 0
        times[f"kubelab test {LESSON} --provider sandbox"], got = kubelab(env, "test", LESSON)
        assert got == 0
    finally:
        kubelab(env, "down")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for name, seconds in one_run().items():
            results.setdefault(name, []).append(seconds)
    print("| command | median | range |")
    print("|---|---|---|")
    for name, values in results.items():
        print(
            f"| {name} | {statistics.median(values):.2f} s | "
            f"{min(values):.2f}-{max(values):.2f} s |"
        )


if __name__ == "__main__":
    main()
