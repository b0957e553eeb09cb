"""Running a lesson's lifecycle: ``up`` walks the steps in ``plan.STEPS``, ``down`` undoes.

Each step is a method named after it; state is written after every step (and every
object applied), so a re-run after a crash or Ctrl-C resumes, and ``down`` knows what to
remove. Progress goes to a ``Reporter`` (the CLI prints it; tests collect it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubelab.checks.builtin import CheckContext, pod_ready
from kubelab.checks.runner import ExerciseOutcome, wait_for_exercise
from kubelab.cluster.kube import Kube
from kubelab.errors import KubelabTimeout
from kubelab.lessons.loader import LoadedLesson
from kubelab.lessons.model import Exercise, Lesson
from kubelab.lessons.plan import STEPS, render
from kubelab.providers.base import Provider
from kubelab.state import CreatedResource, LessonRecord, StateStore

Reporter = Callable[[str, str], None]  # (step, message)

READY_TIMEOUT = 120.0


def _quiet(step: str, message: str) -> None:
    pass


def lesson_namespace(lesson: Lesson) -> str:
    """The namespace students work in: the first the lesson declares (or deploys to)."""
    if lesson.namespaces:
        return lesson.namespaces[0].name
    if lesson.deploy:
        return lesson.deploy[0].namespace
    return "default"


def check_context(provider: Provider, record: LessonRecord) -> CheckContext:
    """How checks reach the lesson's cluster, from what ``up`` recorded."""
    kube = Kube(Path(record.details["kubeconfig"]))
    details = dict(record.details)
    return CheckContext(kube=kube, sampler=lambda spec: provider.sampler(kube, details, spec))


def exercise_available(exercise: Exercise, available: set[str]) -> bool:
    return exercise.needed_components() <= available


@dataclass
class UpResult:
    record: LessonRecord
    first: ExerciseOutcome | None
    seconds: float


class LessonRunner:
    def __init__(
        self,
        loaded: LoadedLesson,
        provider: Provider,
        store: StateStore,
        report: Reporter = _quiet,
        ready_timeout: float = READY_TIMEOUT,
        poll: float = 0.2,
    ) -> None:
        self.loaded = loaded
        self.lesson = loaded.lesson
        self.provider = provider
        self.store = store
        self.report = report
        self.ready_timeout = ready_timeout
        self.poll = poll
        self.namespace = lesson_namespace(self.lesson)
        self._kube: Kube | None = None

    # -- bookkeeping -----------------------------------------------------------------------

    def _update(self, change: Callable[[LessonRecord], None]) -> LessonRecord:
        with self.store.transaction() as state:
            record = state.lesson(self.lesson.id)
            record.provider = self.provider.name
            change(record)
            from kubelab.state import now

            record.updated_at = now()
            return record

    def _done(self, step: str) -> None:
        self._update(lambda r: r.steps_done.append(step) if step not in r.steps_done else None)

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            record = self.store.load().lesson(self.lesson.id)
            self._kube = Kube(Path(record.details["kubeconfig"]))
        return self._kube

    # -- up --------------------------------------------------------------------------------

    def up(self) -> UpResult:
        started = time.monotonic()
        first: ExerciseOutcome | None = None
        for step in STEPS:
            result = getattr(self, f"step_{step}")()
            if step == "exercises":
                first = result
            self._done(step)
        record = self.store.load().lesson(self.lesson.id)
        return UpResult(record, first, time.monotonic() - started)

    def step_preflight(self) -> None:
        self.provider.preflight()
        self.report("preflight", f"tools for the {self.provider.name} provider are here")

    def step_cluster(self) -> None:
        info = self.provider.ensure_cluster(self.namespace)

        def record(r: LessonRecord) -> None:
            r.cluster = self.provider.name
            r.details.update(info.details)
            r.details["kubeconfig"] = str(info.kubeconfig)
            r.details["namespace"] = self.namespace

        self._update(record)
        self._kube = None
        where = info.details.get("api", info.kubeconfig)
        self.report("cluster", f"{self.provider.name} cluster ready at {where}")

    def step_components(self) -> None:
        if not self.provider.installs_components:
            self.report(
                "components",
                "skipped: the sandbox has no Istio control plane, Kiali, Jaeger, "
                "VictoriaMetrics or Gitea (Envoy plays the mesh's routing)",
            )
            return
        raise NotImplementedError("Helm components come with the real-cluster providers")

    def step_images(self) -> None:
        if not self.provider.builds_images:
            self.report("images", "skipped: the sandbox runs app_backend from source")
            return
        raise NotImplementedError("image builds come with the real-cluster providers")

    def step_deploy(self) -> None:
        rendered = render(self.loaded)
        applied = 0
        for obj in rendered.objects:
            self.kube.apply(obj.obj)
            applied += 1
            resource = CreatedResource(kind=obj.kind, name=obj.name, namespace=obj.namespace)
            self._update(functools.partial(LessonRecord.add_resource, resource=resource))
        self._wait_for_deployments(rendered.objects)
        self.report("deploy", f"{applied} objects applied and their pods are ready")

    def _wait_for_deployments(self, objects: list[Any]) -> None:
        deployments = [(o.namespace, o.name) for o in objects if o.kind == "Deployment"]
        pods = [(o.namespace, o.name) for o in objects if o.kind == "Pod"]
        deadline = time.monotonic() + self.ready_timeout
        waiting: list[str] = []
        while True:
            waiting = []
            for namespace, name in deployments:
                dep = self.kube.get("apps/v1", "Deployment", name, namespace) or {}
                want = (dep.get("spec") or {}).get("replicas", 1)
                status = dep.get("status") or {}
                if (
                    status.get("availableReplicas", 0) < want
                    or status.get("updatedReplicas", 0) < want
                ):
                    waiting.append(f"deployment/{name}")
            for namespace, name in pods:
                if not pod_ready(self.kube.get("v1", "Pod", name, namespace) or {}):
                    waiting.append(f"pod/{name}")
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise KubelabTimeout(
                    f"timed out waiting for {', '.join(waiting)} in namespace "
                    f"{self.namespace} ({self.ready_timeout:.0f}s)",
                    hint=f"kubectl get pods -n {self.namespace}; kubelab status --verbose",
                )
            time.sleep(self.poll)

    def step_exercises(self) -> ExerciseOutcome | None:
        available = self.provider.available_components(self.lesson.components)
        first = next((e for e in self.lesson.exercises if exercise_available(e, available)), None)
        if first is None:
            self.report("exercises", "no exercise of this lesson runs on this provider")
            return None
        record = self.store.load().lesson(self.lesson.id)
        outcome = wait_for_exercise(
            self.lesson.id, first, check_context(self.provider, record), timeout=30, poll=1.0
        )
        self.report("exercises", f"first exercise {first.id}: checks {outcome.status}")
        return outcome

    # -- down ------------------------------------------------------------------------------

    def down(self) -> list[str]:
        record = self.store.load().lessons.get(self.lesson.id)
        details = dict(record.details) if record else {}
        removed = self.provider.teardown(details)
        with self.store.transaction() as state:
            state.lessons.pop(self.lesson.id, None)
        return removed
