"""The e2e tests' harness: run kubelab, read the JSON it prints, say what is wrong.

Every assertion of ``test_lesson_on_cluster.py`` is made on what kubelab prints with
``-o json`` (shapes: ``kubelab/cli/up.py``, ``student.py``, ``lifecycle.py``,
``lessons/selftest.py``) or on what ``kubectl``/``helm`` find on the cluster. The helpers
return lists of problems (empty when all is well) so a failing test names every problem at
once. ``test_harness_offline.py`` runs them on JSON from real sandbox runs, everywhere.

:class:`Kubelab` runs each command in its own process group: when a command outlives its
timeout, or the test is interrupted (pytest-timeout, Ctrl-C), it gets SIGINT (kubelab's
Ctrl-C: it stops starting work and leaves a consistent state), then SIGKILL, helm children
included, so the cleanup that follows does not race a half-dead ``up``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelab.tools import find_tool

ROOT = Path(__file__).resolve().parents[2]
LESSON_LABEL = "kubelab.dev/lesson"
STEPS = ["preflight", "cluster", "components", "images", "deploy", "exercises"]
# How the images step says a tag is there already (kubelab/images/build.py plan_images).
IMAGE_EXISTS = " already exists in the registry"
# Grace between SIGINT and SIGKILL: helm releases in flight are let finish their step.
INTERRUPT_GRACE = 60.0


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def stop_group(proc: subprocess.Popen[str], grace: float = INTERRUPT_GRACE) -> None:
    """SIGINT to the process group ``proc`` leads, then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # The leader is gone; its children (helm) share the group: end them too.
            os.killpg(proc.pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_group(
    argv: Sequence[str], env: Mapping[str, str], timeout: float, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a new process group; on timeout or interruption stop the group.

    A timeout fails the test with the command's last output.
    """
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        out, err = proc.communicate()
        raise AssertionError(
            f"{' '.join(argv[3:] or argv)} did not finish in {timeout:.0f}s (stopped)\n"
            f"--- stderr\n{tail(err)}\n--- stdout\n{tail(out)}"
        ) from None
    except BaseException:  # pytest-timeout, Ctrl-C: leave nothing running behind us
        stop_group(proc)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def parse_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command printed on stdout; an AssertionError quoting it when there is none."""
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"{' '.join(proc.args[3:])} printed no JSON (exit {proc.returncode})\n"
            f"--- stderr\n{tail(proc.stderr)}\n--- stdout\n{tail(proc.stdout)}"
        ) from None


def parse_json_file(path: Path, proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON report ``proc`` wrote to ``path`` (``kubelab test --out``)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AssertionError(
            f"{' '.join(proc.args[3:])} wrote no JSON report to {path} ({exc}; exit "
            f"{proc.returncode})\n--- stderr\n{tail(proc.stderr)}\n--- stdout\n{tail(proc.stdout)}"
        ) from None


@dataclass
class Kubelab:
    """The kubelab CLI of this checkout, run as a user would, with one KUBELAB_HOME."""

    env: dict[str, str]
    provider: str
    lessons: set[str] = field(default_factory=set)  # every lesson an `up`/`test` touched

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if args[:1] in (("up",), ("test",)) and len(args) > 1 and "--dry-run" not in args:
            self.lessons.add(args[1])
        argv = [sys.executable, "-c", "from kubelab.cli.main import run; run()", *args]
        return run_group(argv, {**os.environ, "COLUMNS": "200", **self.env}, timeout)

    def json(self, *args: str, timeout: float = 120, codes: Iterable[int] = (0,)) -> Any:
        """``kubelab ARGS -o json``, its exit code among ``codes``; the parsed JSON."""
        proc = self.run(*args, "-o", "json", timeout=timeout)
        data = parse_json(proc)
        allowed = tuple(codes)
        assert proc.returncode in allowed, (
            f"{' '.join(args)} exited {proc.returncode} (expected {allowed})\n"
            f"--- stderr\n{tail(proc.stderr)}\n--- stdout\n{tail(proc.stdout)}"
        )
        return data

    def up(self, lesson: str, *extra: str, timeout: float) -> Any:
        return self.json("up", lesson, "--provider", self.provider, *extra, timeout=timeout)

    def plan(self, lesson: str) -> Plan:
        dry = self.json("up", lesson, "--dry-run", "--provider", self.provider, timeout=300)
        return Plan.from_dry_run(dry)

    def running(self) -> list[str]:
        """The lessons `kubelab status -o json` lists."""
        return [entry["lesson"] for entry in self.json("status")["lessons"]]


# ----------------------------------------------------------------------------- up


@dataclass(frozen=True)
class Plan:
    """What a lesson puts on a cluster, from ``kubelab up LESSON --dry-run -o json``."""

    lesson: str
    releases: frozenset[tuple[str, str]]  # (release, namespace) of its components
    kinds: frozenset[tuple[str, str | None]]  # (kind, namespace or None) of its objects

    @classmethod
    def from_dry_run(cls, dry: Mapping[str, Any]) -> Plan:
        return cls(
            lesson=str(dry["lesson"]),
            releases=frozenset((c["release"], c["namespace"]) for c in dry["components"]),
            kinds=frozenset((o["kind"], o["namespace"]) for o in dry["objects"]),
        )

    @property
    def release_names(self) -> set[str]:
        return {name for name, _ in self.releases}


def up_changes(up: Mapping[str, Any]) -> list[str]:
    """Everything a ``kubelab up -o json`` says it changed, one line each ([]: nothing)."""
    changes = up["changes"]
    found = [
        f"component {c['name']}: {c['outcome']}"
        for c in changes["components"]
        if c["outcome"] != "unchanged"
    ]
    found += [f"images: {line}" for line in changes["images"] if not line.endswith(IMAGE_EXISTS)]
    deploy = changes["deploy"]
    if deploy["changed"]:
        found.append(f"deploy: {deploy['changed']} changes to {deploy['objects']} objects")
    if changes["api_writes"]:
        found.append(f"{changes['api_writes']} mutating Kubernetes API calls in all")
    return found


def up_drift(up: Mapping[str, Any]) -> list[str]:
    """The objects an ``up -o json`` found changed since they were deployed and left as
    they are, one line per field ([]: none)."""
    drift = up["changes"]["deploy"].get("drift") or {}
    return [
        f"{where}: {d['field']} is {d['live']!r}, the lesson has {d['lesson']!r}"
        for where, fields in sorted(drift.items())
        for d in fields
    ]


def up_problems(up: Mapping[str, Any], lesson: str, provider: str, plan: Plan | None) -> list[str]:
    """What is wrong with a successful ``up``'s report: the lesson, provider, a kubeconfig,
    the first exercise passing, and (on a cluster) a report for each of its releases."""
    problems = []
    if (up.get("lesson"), up.get("provider")) != (lesson, provider):
        problems.append(f"up reports {up.get('lesson')} on {up.get('provider')}")
    if not up.get("kubeconfig") or not Path(up["kubeconfig"]).is_file():
        problems.append(f"up names no kubeconfig file: {up.get('kubeconfig')!r}")
    first = up.get("first_exercise")
    if first is None:
        problems.append("up ran no exercise's checks")
    elif first["status"] != "passed":
        problems += [f"first exercise: {line}" for line in failing_checks(first)]
    if not up["changes"]["deploy"]["objects"]:
        problems.append("the deploy step applied no object")
    if plan is not None:
        reported = {c["name"] for c in up["changes"]["components"]}
        missing = plan.release_names - reported
        if missing:
            problems.append(f"no outcome reported for releases {sorted(missing)}")
    return problems


def second_up_problems(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """A second ``up`` must change nothing and report the same components and objects."""
    problems = [f"second up changed: {line}" for line in up_changes(second)]
    names = [c["name"] for c in first["changes"]["components"]]
    again = [c["name"] for c in second["changes"]["components"]]
    if names != again:
        problems.append(f"components reported: first {names}, second {again}")
    objects = (first["changes"]["deploy"]["objects"], second["changes"]["deploy"]["objects"])
    if objects[0] != objects[1]:
        problems.append(f"deployed objects: first {objects[0]}, second {objects[1]}")
    return problems


# ----------------------------------------------------------------------------- checks


def failing_checks(outcome: Mapping[str, Any]) -> list[str]:
    """The checks of a ``kubelab check -o json`` answer that did not pass, one line each."""
    return [
        f"{outcome['exercise']}/{c['id']}: {c['status']}: {c['message']}"
        + (f" (hint: {c['hint']})" if c.get("hint") else "")
        for c in outcome["checks"]
        if c["status"] != "passed"
    ]


def status_problems(status: Mapping[str, Any], lesson: str, provider: str) -> list[str]:
    """`kubelab status -o json` must list ``lesson`` on ``provider`` with every step done."""
    entries = [e for e in status["lessons"] if e["lesson"] == lesson]
    if not entries:
        return [f"status lists {[e['lesson'] for e in status['lessons']]}, not {lesson}"]
    entry = entries[0]
    problems = []
    if entry["provider"] != provider:
        problems.append(f"status: provider {entry['provider']}, expected {provider}")
    if entry["steps_done"] != STEPS:
        problems.append(f"status: steps done {entry['steps_done']}, expected {STEPS}")
    if entry["running"] is False:
        problems.append("status: the lesson is not running")
    return problems


def follow_course(
    lab: Kubelab,
    lesson: Any,
    unavailable: Iterable[str] = (),
    wait: float = 120.0,
    solve_timeout: float = 900.0,
) -> list[str]:
    """Do the course as a student with the solve scripts' commands: for every exercise,
    ``exercise`` (available), ``check`` (fails before, unless the lesson says its state is
    there already), ``solve``, ``check --wait`` (passes); then ``progress``.

    ``lesson`` is the loaded model (``find_lesson(id).lesson``); ``unavailable`` names the
    exercises this provider cannot run (the sandbox's): they must say so and are skipped.
    """
    skipped = set(unavailable)
    problems: list[str] = []
    for exercise in lesson.exercises:
        shown = lab.json("exercise", exercise.id)
        if shown["exercise"] != exercise.id:
            problems.append(f"`exercise {exercise.id}` shows {shown['exercise']}")
        if exercise.id in skipped:
            if shown["available"]:
                problems.append(f"{exercise.id} should be unavailable on {lab.provider}")
            continue
        if not shown["available"]:
            problems.append(f"{exercise.id} is unavailable on {lab.provider}")
            continue
        if not exercise.passes_before_solve:
            before = lab.json("check", exercise.id, codes=(1,))
            if before["status"] == "passed":
                problems.append(f"{exercise.id}: checks pass before its solve script")
        solved = lab.json("solve", exercise.id, timeout=solve_timeout, codes=(0, 4))
        if solved["exit_code"] != 0:
            problems.append(
                f"{exercise.id}: solve script exited {solved['exit_code']}: "
                f"{tail(solved['output'], 10)}"
            )
            continue
        after = lab.json(
            "check", exercise.id, "--wait", str(wait), timeout=wait + 300, codes=(0, 1)
        )
        if after["status"] != "passed":
            problems += [f"after solve: {line}" for line in failing_checks(after)]
    progress = lab.json("progress")
    expected = {e.id: "passed" for e in lesson.exercises if e.id not in skipped}
    got = {r["exercise"]: r["status"] for r in progress["exercises"] if r["exercise"] in expected}
    if got != expected:
        problems.append(f"progress: {got}")
    if progress["passed"] != len(expected):
        problems.append(f"progress: {progress['passed']} of {len(expected)} passed")
    return problems


def lesson_test_problems(
    report: Mapping[str, Any], exercises: Sequence[str], skipped: Iterable[str] = ()
) -> list[str]:
    """What is wrong with a ``kubelab test -o json`` report: every exercise in order, each
    passed (checks failed before its solve script, passed after it), none skipped but
    ``skipped``."""
    allowed = set(skipped)
    problems = []
    if report["setup_error"]:
        problems.append(f"setup failed: {report['setup_error']}")
    if [e["exercise"] for e in report["exercises"]] != list(exercises):
        problems.append(f"exercises run: {[e['exercise'] for e in report['exercises']]}")
    for item in report["exercises"]:
        name = item["exercise"]
        if item["result"] == "skipped" and name in allowed:
            continue
        if item["result"] != "passed":
            why = item["problems"] or [item.get("skipped_because") or ""]
            problems.append(f"{name}: {item['result']}: {'; '.join(why)}")
        elif not item["after"] or item["after"]["status"] != "passed":
            problems.append(f"{name}: passed without passing checks after its solve script")
    if not problems and not report["passed"]:
        problems.append("the report says the lesson test failed")
    return problems


def removed_problems(down: Mapping[str, Any], lesson: str, plan: Plan | None) -> list[str]:
    """`kubelab down LESSON -o json` must name the lesson and (on a cluster) each release."""
    problems = []
    if down["lessons"] != [lesson]:
        problems.append(f"down took down {down['lessons']}, not [{lesson}]")
    if plan is not None:
        said = set(down["removed"])
        missing = sorted(n for n in plan.release_names if f"helm release {n}" not in said)
        if missing:
            problems.append(f"down does not say it removed releases {missing}")
    return problems


# ----------------------------------------------------------------------------- the cluster


def _tool(name: str) -> str:
    found = find_tool(name)
    assert found is not None, f"{name} is missing: bash scripts/install-tools.sh"
    return str(found)


def kubectl(kubeconfig: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_group(
        [_tool("kubectl"), "--kubeconfig", str(kubeconfig), *args],
        {**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout,
    )


def helm_releases(kubeconfig: Path) -> list[dict[str, Any]]:
    """``helm list --all --all-namespaces -o json``: every release, whatever its state."""
    proc = run_group(
        [_tool("helm"), "list", "--all", "--all-namespaces", "-o", "json"],
        {**os.environ, "KUBECONFIG": str(kubeconfig)},
        120,
    )
    assert proc.returncode == 0, f"helm list failed: {tail(proc.stderr)}"
    releases: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return releases


def releases_left(plan: Plan, listing: Iterable[Mapping[str, Any]]) -> list[str]:
    """The plan's releases that ``helm list -o json`` (``listing``) still shows."""
    return sorted(
        f"helm release {r['name']} in {r['namespace']} ({r.get('status')})"
        for r in listing
        if (r["name"], r["namespace"]) in plan.releases
    )


def objects_left(kubeconfig: Path, plan: Plan) -> list[str]:
    """Objects of the lesson's kinds still carrying its label (a kind the cluster no longer
    serves, its CRD uninstalled with its component, has none)."""
    left: list[str] = []
    for kind, namespace in sorted(plan.kinds, key=str):
        where = ["-n", namespace] if namespace else []
        proc = kubectl(
            kubeconfig, "get", kind, *where, "-l", f"{LESSON_LABEL}={plan.lesson}", "-o", "name"
        )
        if proc.returncode != 0:
            if "doesn't have a resource type" in proc.stderr:
                continue
            left.append(f"cannot list {kind}: {tail(proc.stderr, 3)}")
            continue
        left += [f"{name} in {namespace}" if namespace else name for name in proc.stdout.split()]
    return left


def leftovers(kubeconfig: Path, plan: Plan, timeout: float = 120.0) -> list[str]:
    """What of ``plan`` is still on the cluster, after waiting up to ``timeout`` seconds for
    deletions in progress (finalizers, terminating namespaces) to finish."""
    deadline = time.monotonic() + timeout
    while True:
        left = objects_left(kubeconfig, plan)
        if plan.releases:
            left += releases_left(plan, helm_releases(kubeconfig))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(5)


def current_server(kubeconfig: Path) -> str | None:
    """The API server URL of a kubeconfig's current context."""
    config: dict[str, Any] = yaml.safe_load(kubeconfig.read_text()) or {}
    wanted = config.get("current-context")
    contexts = [c["context"] for c in config.get("contexts") or [] if c["name"] == wanted]
    if not contexts:
        return None
    clusters = [
        c["cluster"] for c in config.get("clusters") or [] if c["name"] == contexts[0]["cluster"]
    ]
    server = clusters[0].get("server") if clusters else None
    return str(server) if server else None


def current_context(kubeconfig: Path) -> str | None:
    """The name of a kubeconfig's current context (kind names its own ``kind-<name>``)."""
    config: dict[str, Any] = yaml.safe_load(kubeconfig.read_text()) or {}
    context = config.get("current-context")
    return str(context) if context else None
