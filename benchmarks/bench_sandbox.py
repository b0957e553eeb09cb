"""Sandbox budgets: `up` to ready (< 5 s) and a 200-sample traffic check while v1 hangs (< 3 s).

Run by hand: ``python benchmarks/bench_sandbox.py [--runs 3]``. Each run uses a fresh
kubelab home, starts the sandbox with the lesson's runner (the code `kubelab up` runs),
notes when the deploy step is done (pods ready: "ready") and when `up` returns (after
the first exercise's checks), times a 200-sample traffic-split check while v1 hangs, and
stops the sandbox. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def one_run() -> tuple[float, float, list[float]]:
    from kubelab.checks.registry import implementation
    from kubelab.checks.types import TrafficSplit
    from kubelab.lessons.loader import find_lesson
    from kubelab.lessons.runner import LessonRunner, check_context
    from kubelab.providers.sandbox import SandboxProvider
    from kubelab.state import StateStore

    store = StateStore()
    marks: dict[str, float] = {}
    started = time.monotonic()
    runner = LessonRunner(
        find_lesson("istio-traffic-splitting"),
        SandboxProvider(),
        store,
        lambda step, _msg: marks.setdefault(step, time.monotonic() - started),
    )
    try:
        runner.up()
        total = time.monotonic() - started
        ctx = check_context(SandboxProvider(), store.load().lesson("istio-traffic-splitting"))
        spec = TrafficSplit.model_validate(
            {
                "type": "traffic-split",
                "service": "app-backend",
                "namespace": "istio",
                # "/" (the lesson's checks ask /version): the worst case, v1 hanging.
                "path": "/",
                "samples": 200,
                "expect": {"v1": 90, "v2": 10},
            }
        )
        checks = []
        for _ in range(3):
            t0 = time.monotonic()
            result = implementation("traffic-split")(spec, ctx)
            checks.append(time.monotonic() - t0)
            assert result.evidence["hung"].get("v1"), "v1 should be hanging by now"
        return marks["deploy"], total, checks
    finally:
        runner.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ready, total, checks = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="kubelab-bench-") as home:
            os.environ["KUBELAB_HOME"] = home
            r, t, c = one_run()
            ready.append(r)
            total.append(t)
            checks += c
    print(
        f"up to ready (pods ready)        median {statistics.median(ready):.2f} s "
        f"(min {min(ready):.2f}, max {max(ready):.2f})  budget 5 s"
    )
    print(f"up incl. first exercise checks  median {statistics.median(total):.2f} s")
    print(
        f"200-sample split check, v1 hung median {statistics.median(checks):.2f} s "
        f"(max {max(checks):.2f})  budget 3 s"
    )
    ok = statistics.median(ready) < 5 and statistics.median(checks) < 3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
