"""Install (and uninstall) Helm releases as a DAG: independent ones in parallel.

Each node is one unit of work (a Helm release to ensure, or to remove) with the names it
depends on. A node starts as soon as everything it depends on has finished, up to
``max_parallel`` at once, so the wall time is close to the longest dependency chain
rather than the sum. A failure stops new work from starting, lets running work finish,
and is reported with every failed node named. Progress is pushed to a ``ProgressSink``
(the CLI draws a live table; tests record the events).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from kubelab.errors import KubelabError, SetupError


@dataclass(frozen=True)
class Node:
    name: str
    depends_on: tuple[str, ...]
    run: Callable[[], str]  # does the work; returns what happened ("installed", "unchanged", ...)
    title: str = ""


@dataclass
class NodeResult:
    name: str
    outcome: str  # what run() returned, or "failed" / "not started"
    seconds: float
    error: str | None = None


class ProgressSink(Protocol):
    def update(self, name: str, status: str, detail: str = "") -> None: ...


class NullProgress:
    def update(self, name: str, status: str, detail: str = "") -> None:
        pass


@dataclass
class RecordingProgress:
    """Keeps every event (tests, and ``--output json``)."""

    events: list[tuple[float, str, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, name: str, status: str, detail: str = "") -> None:
        with self._lock:
            self.events.append((time.monotonic(), name, status, detail))


def check_dag(nodes: Iterable[Node]) -> list[str]:
    """Names in a valid order; raises when a dependency is unknown or there is a cycle."""
    by_name = {n.name: n for n in nodes}
    for node in by_name.values():
        for dep in node.depends_on:
            if dep not in by_name:
                raise SetupError(f"{node.name} depends on {dep}, which is not being installed")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise SetupError(f"dependency cycle: {' -> '.join((*path, name))}")
        state[name] = 1
        for dep in by_name[name].depends_on:
            visit(dep, (*path, name))
        state[name] = 2
        order.append(name)

    for name in by_name:
        visit(name, ())
    return order


def reversed_dag(nodes: Iterable[Node], run: Callable[[str], Callable[[], str]]) -> list[Node]:
    """The same graph with edges turned around (uninstall: dependents go first)."""
    nodes = list(nodes)
    dependents: dict[str, list[str]] = {n.name: [] for n in nodes}
    for node in nodes:
        for dep in node.depends_on:
            dependents[dep].append(node.name)
    return [Node(n.name, tuple(dependents[n.name]), run(n.name), n.title) for n in nodes]


# helm installs mostly wait for pods to become ready, so several at once cost little.
DEFAULT_PARALLEL = 8


def run_dag(
    nodes: Iterable[Node],
    max_parallel: int = DEFAULT_PARALLEL,
    progress: ProgressSink | None = None,
) -> list[NodeResult]:
    """Run every node after its dependencies; raise ``SetupError`` naming the failures."""
    nodes = list(nodes)
    check_dag(nodes)
    sink = progress or NullProgress()
    by_name = {n.name: n for n in nodes}
    done: set[str] = set()
    results: dict[str, NodeResult] = {}
    running: dict[Future[str], tuple[str, float]] = {}
    failed = False
    for node in nodes:
        sink.update(node.name, "waiting", ", ".join(node.depends_on))
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="kubelab-dag") as pool:
        try:
            while True:
                if not failed:
                    ready = [
                        n
                        for n in nodes
                        if n.name not in done
                        and n.name not in {name for name, _ in running.values()}
                        and all(d in done for d in n.depends_on)
                    ]
                    for node in ready[: max_parallel - len(running)]:
                        sink.update(node.name, "running")
                        running[pool.submit(node.run)] = (node.name, time.monotonic())
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    name, started = running.pop(future)
                    seconds = time.monotonic() - started
                    try:
                        outcome = future.result()
                    except KubelabError as exc:
                        failed = True
                        results[name] = NodeResult(name, "failed", seconds, exc.message)
                        sink.update(name, "failed", exc.message)
                        continue
                    except Exception as exc:  # a bug or an unexpected client error
                        failed = True
                        message = f"{type(exc).__name__}: {exc}"
                        results[name] = NodeResult(name, "failed", seconds, message)
                        sink.update(name, "failed", message)
                        continue
                    done.add(name)
                    results[name] = NodeResult(name, outcome, seconds)
                    sink.update(name, outcome, f"{seconds:.1f}s")
        except BaseException:
            # Ctrl-C: start nothing more; what runs finishes (helm cannot be torn off
            # mid-release safely) and the state written so far lets a re-run resume.
            for future in running:
                future.cancel()
            raise
    for name in by_name:
        if name not in results:
            results[name] = NodeResult(name, "not started", 0.0)
            sink.update(name, "not started")
    errors = [r for r in results.values() if r.outcome == "failed"]
    if errors:
        raise SetupError(
            f"{len(errors)} of {len(nodes)} components failed",
            details=[f"{r.name}: {r.error}" for r in errors],
            hint="Fix the cause above and run the same command again: what is installed "
            "already is kept.",
        )
    return [results[n.name] for n in nodes]
