"""The DAG installer: dependencies first, independent work in parallel, failures named."""

from __future__ import annotations

import threading
import time

import pytest

from kubelab.components.installer import (
    Node,
    RecordingProgress,
    check_dag,
    reversed_dag,
    run_dag,
)
from kubelab.errors import SetupError


def _graph(durations, deps, log, fail=()):
    lock = threading.Lock()

    def make(name):
        def run():
            with lock:
                log.append(("start", name, time.monotonic()))
            time.sleep(durations[name])
            with lock:
                log.append(("end", name, time.monotonic()))
            if name in fail:
                raise SetupError(f"helm failed for {name}")
            return "installed"

        return run

    return [Node(n, tuple(deps.get(n, ())), make(n)) for n in durations]


def _times(log):
    start = {n: t for kind, n, t in log if kind == "start"}
    end = {n: t for kind, n, t in log if kind == "end"}
    return start, end


def test_dependencies_first_and_independent_ones_together():
    durations = {"base": 0.05, "istiod": 0.05, "gateway": 0.05, "vm": 0.1, "kiali": 0.05}
    deps = {"istiod": ["base"], "gateway": ["istiod"], "kiali": ["istiod", "vm"]}
    log: list = []
    progress = RecordingProgress()
    results = run_dag(_graph(durations, deps, log), max_parallel=4, progress=progress)
    start, end = _times(log)
    assert [r.outcome for r in results] == ["installed"] * 5
    for node, needs in deps.items():
        for dep in needs:
            assert start[node] >= end[dep]
    # vm (no deps) runs alongside base
    assert abs(start["vm"] - start["base"]) < 0.03
    statuses = [(name, status) for _, name, status, _ in progress.events]
    assert ("kiali", "waiting") in statuses and ("kiali", "installed") in statuses


def test_failure_stops_new_work_and_names_the_node():
    durations = {"a": 0.02, "b": 0.02, "c": 0.02}
    log: list = []
    with pytest.raises(SetupError) as info:
        run_dag(_graph(durations, {"b": ["a"], "c": ["b"]}, log, fail={"b"}))
    assert info.value.details == ["b: helm failed for b"]
    assert "run the same command again" in (info.value.hint or "")
    assert ("start", "c") not in {(k, n) for k, n, _ in log}


def test_cycles_and_unknown_dependencies_are_refused():
    def noop():
        return "ok"

    with pytest.raises(SetupError, match="dependency cycle: a -> b -> a"):
        check_dag([Node("a", ("b",), noop), Node("b", ("a",), noop)])
    with pytest.raises(SetupError, match="depends on nope"):
        check_dag([Node("a", ("nope",), noop)])


def test_reversed_dag_removes_dependents_first():
    log: list = []
    nodes = _graph({"base": 0.01, "istiod": 0.01}, {"istiod": ["base"]}, log)
    order: list[str] = []

    def remover(name):
        return lambda: order.append(name) or "removed"

    run_dag(reversed_dag(nodes, remover))
    assert order == ["istiod", "base"]
