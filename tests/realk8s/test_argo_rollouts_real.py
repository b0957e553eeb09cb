"""The argo-rollouts lesson's solve scripts on the real kube-apiserver, as a class student.

The lesson's app is rendered as ``kubelab class create`` renders it for one student (its
namespace moved to the student's, no ingress Gateway) and applied to the real server with
the student's ServiceAccount, Role (:func:`~kubelab.classroom.access.student_rules`) and
RoleBinding. Each solve script then runs with the real kubectl 1.31 and a kubeconfig
carrying the student's TokenRequest token, so every ``kubectl patch`` (JSON patches of the
pod template, merge patches of ``--subresource=status``), ``get``, ``wait`` and ``exec`` it
makes goes through the real server's RBAC, admission and validation against the upstream
CRDs. The lesson's checks run as that student too (what ``kubelab check`` does in a class).

The Argo Rollouts controller is :class:`FakeArgoRollouts` (admin rights, as the real
controller's ServiceAccount has): no proof that the lesson works with Argo Rollouts (the
e2e test on a real cluster is), but it makes the transitions the scripts and the checks rely
on. Its ReplicaSets are real ones, owned by the real Rollouts; the Deployment ``traffic``
and the ``curl-test`` pod run through the real controllers and the node agent. The checks
that need VictoriaMetrics are left out, as they were on the emulator: nothing here records
the app's metrics.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubelab import paths
from kubelab.checks.registry import CheckContext
from kubelab.checks.result import CheckResult, Status
from kubelab.checks.runner import run_check
from kubelab.classroom import access
from kubelab.classroom.roster import Student
from kubelab.cluster.kube import Kube
from kubelab.lessons.loader import LoadedLesson, find_lesson
from kubelab.lessons.model import Exercise
from kubelab.lessons.plan import PLACEHOLDER_REGISTRY, render
from kubelab.tools import find_tool

LESSON_ID = "argo-rollouts"
LESSON_NAMESPACE = "rollouts-lab"
ROLLOUTS = ("bluegreen", "bluegreen-analysis", "canary", "canary-analysis")

pytestmark = pytest.mark.timeout(900)

Obj = dict[str, Any]


class FakeArgoRollouts:
    """A stand-in for the Argo Rollouts controller, reacting to what the solve scripts patch.

    Not Argo Rollouts, and no proof that the lesson works on a cluster (the e2e test is). It
    makes the same state transitions the solve scripts and the delivery checks rely on, as Argo
    Rollouts v1.9 makes them (rollout/bluegreen.go, rollout/canary.go, rollout/service.go,
    utils/rollout/rolloututil.go), so the scripts' kubectl commands, their waiting loops and
    their idempotence are exercised against a Kubernetes-compatible API with the real kubectl:

    - a new pod template gets a ReplicaSet ``<rollout>-<hash>`` and ``status.currentPodHash``;
      ``status.observedGeneration`` follows ``metadata.generation``;
    - blueGreen: the preview Service switches to it, the pre-promotion analysis runs (an
      AnalysisRun that succeeds at once), then a ``BlueGreenPause``; clearing the pause
      conditions (promote) switches the active Service and makes it stable;
    - canary: steps in order; ``setWeight`` writes ``status.canary.weights``, the
      VirtualService weights, the DestinationRule subsets and the Services; ``pause: {}``
      waits for a promotion, a timed pause passes at once, ``analysis`` leaves a successful
      AnalysisRun; after the last step the new ReplicaSet is stable and the weights go back;
    - ``status.promoteFull`` finishes at once, ``status.abort`` makes it Degraded, asking for
      the stable template again makes it Healthy.
    """

    API = "argoproj.io/v1alpha1"
    HASH = "rollouts-pod-template-hash"

    def __init__(self, kube: Any, namespace: str, interval: float = 0.2) -> None:
        import threading

        self.kube = kube
        self.ns = namespace
        self.interval = interval
        self.errors: list[str] = []
        self._made: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> FakeArgoRollouts:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for name in ROLLOUTS:
                try:
                    self.reconcile(name)
                except Exception as exc:  # keep going; the test reads the errors
                    self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

    # -- API helpers
    def _res(self, api_version: str, kind: str) -> Any:
        return self.kube._resource(api_version, kind)

    def _patch(self, api_version: str, kind: str, name: str, body: Obj) -> None:
        self._res(api_version, kind).patch(
            body=body, name=name, namespace=self.ns, content_type="application/merge-patch+json"
        )

    def _create(self, api_version: str, kind: str, body: Obj) -> None:
        from kubernetes.dynamic.exceptions import ConflictError

        key = (kind, body["metadata"]["name"])
        if key in self._made:
            return
        with contextlib.suppress(ConflictError):  # made on an earlier pass
            self._res(api_version, kind).create(body=body, namespace=self.ns)
        self._made.add(key)

    def _select(self, service: str, rollout: str, pod_hash: str) -> None:
        self._patch("v1", "Service", service, {"spec": {"selector": {self.HASH: pod_hash}}})

    # -- the controller
    def reconcile(self, name: str) -> None:
        import hashlib

        ro = self.kube.get(self.API, "Rollout", name, self.ns)
        if ro is None:
            return
        spec, status = ro["spec"], dict(ro.get("status") or {})
        before = copy.deepcopy(status)
        image = spec["template"]["spec"]["containers"][0]["image"]
        pod_hash = hashlib.sha256(image.encode()).hexdigest()[:10]
        self._ensure_replicaset(ro, pod_hash)
        strategy = spec["strategy"]
        status["observedGeneration"] = str(ro["metadata"]["generation"])
        stable = status.get("stableRS")
        if not stable or (status.get("currentPodHash") != pod_hash and pod_hash == stable):
            self._finish(ro, status, pod_hash)
        elif status.get("currentPodHash") != pod_hash:
            status.update(
                currentPodHash=pod_hash,
                phase="Progressing",
                pauseConditions=None,
                controllerPause=False,
                promoteFull=False,
                abort=False,
            )
            if "blueGreen" in strategy:
                self._select(strategy["blueGreen"]["previewService"], name, pod_hash)
            else:
                status["currentStepIndex"] = 0
        elif pod_hash != stable:
            if status.get("abort"):
                status["phase"] = "Degraded"
                status["message"] = "RolloutAborted: Rollout aborted update to revision"
                if "canary" in strategy:
                    self._set_weight(ro, status, pod_hash, 0)
            elif status.get("promoteFull"):
                self._finish(ro, status, pod_hash)
            elif spec.get("paused") or status.get("pauseConditions"):
                status["phase"] = "Paused"
            elif "blueGreen" in strategy:
                self._bluegreen(ro, status, pod_hash)
            else:
                self._canary(ro, status, pod_hash)
        if status != before:
            self._res(self.API, "Rollout").subresources["status"].patch(
                body={"status": status},
                name=name,
                namespace=self.ns,
                content_type="application/merge-patch+json",
            )

    def _ensure_replicaset(self, ro: Obj, pod_hash: str) -> None:
        name = ro["metadata"]["name"]
        labels = {"app": name, self.HASH: pod_hash}
        template = copy.deepcopy(ro["spec"]["template"])
        template["metadata"]["labels"] = {**template["metadata"].get("labels", {}), **labels}
        self._create(
            "apps/v1",
            "ReplicaSet",
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{pod_hash}",
                    "labels": labels,
                    "ownerReferences": [
                        {
                            "apiVersion": self.API,
                            "kind": "Rollout",
                            "name": name,
                            "uid": ro["metadata"].get("uid") or "fake-uid",
                            "controller": True,
                        }
                    ],
                },
                "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": template},
            },
        )

    def _pause(self, status: Obj, reason: str) -> None:
        status["pauseConditions"] = [{"reason": reason, "startTime": "2026-01-01T00:00:00Z"}]
        status["controllerPause"] = True
        status["phase"] = "Paused"

    def _bluegreen(self, ro: Obj, status: Obj, pod_hash: str) -> None:
        if status.get("controllerPause"):  # promoted: pause conditions cleared by a human
            self._finish(ro, status, pod_hash)
            return
        pre = ro["spec"]["strategy"]["blueGreen"].get("prePromotionAnalysis")
        if pre:
            templates = [t["templateName"] for t in pre["templates"]]
            self._analysis_run(ro, pod_hash, templates, "pre", {"rollout-type": "PrePromotion"})
        self._pause(status, "BlueGreenPause")

    def _canary(self, ro: Obj, status: Obj, pod_hash: str) -> None:
        steps = ro["spec"]["strategy"]["canary"]["steps"]
        index = int(status.get("currentStepIndex") or 0)
        if status.get("controllerPause"):  # a pause step was promoted
            index += 1
            status["controllerPause"] = False
        status["phase"] = "Progressing"
        while index < len(steps):
            step = steps[index]
            status["currentStepIndex"] = index
            if "setWeight" in step:
                self._set_weight(ro, status, pod_hash, int(step["setWeight"]))
            elif "pause" in step and not step["pause"].get("duration"):
                self._pause(status, "CanaryPauseStep")
                return
            elif "analysis" in step:
                templates = [t["templateName"] for t in step["analysis"]["templates"]]
                labels = {"rollout-type": "Step", "step-index": str(index)}
                self._analysis_run(ro, pod_hash, templates, str(index), labels)
            index += 1
        self._finish(ro, status, pod_hash)

    def _set_weight(self, ro: Obj, status: Obj, pod_hash: str, weight: int) -> None:
        canary = ro["spec"]["strategy"]["canary"]
        stable = status["stableRS"]
        self._select(canary["stableService"], ro["metadata"]["name"], stable)
        self._select(canary["canaryService"], ro["metadata"]["name"], pod_hash)
        istio = canary["trafficRouting"]["istio"]
        vs = self.kube.get(
            "networking.istio.io/v1", "VirtualService", istio["virtualService"]["name"], self.ns
        )
        assert vs is not None
        http = vs["spec"]["http"]
        for dest in http[0]["route"]:
            target = dest["destination"].get("subset") or dest["destination"]["host"]
            is_canary = target in ("canary", canary["canaryService"])
            dest["weight"] = weight if is_canary else 100 - weight
        self._patch(
            "networking.istio.io/v1",
            "VirtualService",
            vs["metadata"]["name"],
            {"spec": {"http": http}},
        )
        if istio.get("destinationRule"):
            dr_name = istio["destinationRule"]["name"]
            dr = self.kube.get("networking.istio.io/v1", "DestinationRule", dr_name, self.ns)
            assert dr is not None
            subsets = dr["spec"]["subsets"]
            for subset in subsets:
                chosen = pod_hash if subset["name"] == "canary" else stable
                subset["labels"] = {**subset.get("labels", {}), self.HASH: chosen}
            self._patch(
                "networking.istio.io/v1", "DestinationRule", dr_name, {"spec": {"subsets": subsets}}
            )
        status["canary"] = {
            "weights": {
                "canary": {
                    "weight": weight,
                    "podTemplateHash": pod_hash,
                    "serviceName": canary["canaryService"],
                },
                "stable": {
                    "weight": 100 - weight,
                    "podTemplateHash": stable,
                    "serviceName": canary["stableService"],
                },
            }
        }

    def _finish(self, ro: Obj, status: Obj, pod_hash: str) -> None:
        strategy = ro["spec"]["strategy"]
        status.update(
            stableRS=pod_hash,
            currentPodHash=pod_hash,
            pauseConditions=None,
            controllerPause=False,
            promoteFull=False,
            abort=False,
            phase="Healthy",
            message=None,
        )
        if "blueGreen" in strategy:
            for field in ("activeService", "previewService"):
                self._select(strategy["blueGreen"][field], ro["metadata"]["name"], pod_hash)
        else:
            status["currentStepIndex"] = len(strategy["canary"]["steps"])
            self._set_weight(ro, status, pod_hash, 0)

    def _analysis_run(
        self, ro: Obj, pod_hash: str, templates: list[str], suffix: str, labels: dict[str, str]
    ) -> None:
        name = ro["metadata"]["name"]
        metrics = []
        for template in templates:
            found = self.kube.get(self.API, "AnalysisTemplate", template, self.ns)
            assert found is not None, template
            metrics += found["spec"]["metrics"]
        revision = str(ro["metadata"]["generation"])
        results = [
            {
                "name": m["name"],
                "phase": "Successful",
                "count": 3,
                "successful": 3,
                "measurements": [
                    {"phase": "Successful", "value": "[1]", "startedAt": "2026-01-01T00:00:00Z"}
                ],
            }
            for m in metrics
        ]
        self._create(
            self.API,
            "AnalysisRun",
            {
                "apiVersion": self.API,
                "kind": "AnalysisRun",
                "metadata": {
                    "name": f"{name}-{pod_hash}-{revision}-{suffix}",
                    "labels": {"app": name, self.HASH: pod_hash, **labels},
                    "annotations": {"rollout.argoproj.io/revision": revision},
                    "ownerReferences": [
                        {
                            "apiVersion": self.API,
                            "kind": "Rollout",
                            "name": name,
                            "uid": ro["metadata"].get("uid") or "fake-uid",
                            "controller": True,
                        }
                    ],
                },
                "spec": {"metrics": metrics},
                "status": {"phase": "Successful", "metricResults": results},
            },
        )


def _kubectl_env(control_plane: Any, kubeconfig: Path, namespace: str) -> dict[str, str]:
    tools = os.pathsep.join(str(d) for d in paths.tools_dirs() if d.is_dir())
    return {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        # kubectl's discovery cache beside the control plane, not in the developer's home.
        "KUBECACHEDIR": str(control_plane.plane.folder / "kubectl-cache"),
        "KUBELAB_NAMESPACE": namespace,
        "KUBELAB_SOLVE_POLL_SECONDS": "0.3",
        "KUBELAB_SOLVE_WAIT_SECONDS": "120",
        "PATH": f"{os.environ.get('PATH', '')}{os.pathsep}{tools}",
    }


class StudentLab:
    """The lesson's app in one student's namespace, and that student's credentials."""

    def __init__(self, control_plane: Any, loaded: LoadedLesson, namespace: str) -> None:
        self.loaded = loaded
        self.namespace = namespace
        student = Student("ana", "Ana", "ana@example.org")
        rendered = render(
            loaded,
            PLACEHOLDER_REGISTRY,
            None,
            {"gateway": {"enabled": False}},
            namespaces={LESSON_NAMESPACE: namespace},
            labels=access.class_labels(LESSON_ID, student),
        )
        self.app = [o.obj for o in rendered.objects if o.obj.get("kind") != "Namespace"]
        rules = access.student_rules(loaded.lesson.components, self.app)
        self.identity = access.access_objects(LESSON_ID, student, namespace, rules)
        self.admin: Kube = control_plane.kube()
        self.admin.apply_all([*self.identity, *self.app])
        token, _ = self.admin.create_token(namespace, access.IDENTITY, 3600)
        self.kubeconfig = control_plane.kubeconfig_for(
            f"ana-{namespace}", token=token, namespace=namespace
        )
        self.student: Kube = control_plane.kube(self.kubeconfig)
        self.env = _kubectl_env(control_plane, self.kubeconfig, namespace)

    def exercise(self, exercise_id: str) -> Exercise:
        found = self.loaded.lesson.exercise(exercise_id)
        assert found is not None, exercise_id
        return found.in_namespace(LESSON_NAMESPACE, self.namespace)

    def solve(self, exercise: Exercise) -> subprocess.CompletedProcess[str]:
        assert exercise.solve is not None
        return subprocess.run(
            [str(self.loaded.folder / exercise.solve)],
            cwd=self.loaded.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def outcome(self, exercise: Exercise) -> dict[str, CheckResult]:
        """Each check's result as the student, except those that need VictoriaMetrics."""
        ctx = CheckContext(kube=self.student, sampler=lambda spec: None)  # no traffic checks
        return {
            exercise.check_id(i): run_check(check, ctx)
            for i, check in enumerate(exercise.checks)
            if not check.needs - {"argo-rollouts"}
        }


@pytest.fixture(scope="module")
def lab(control_plane: Any, upstream_crds: list[str]) -> Iterator[StudentLab]:
    if find_tool("kubectl") is None or find_tool("helm") is None:
        pytest.skip("kubectl and helm are needed: run scripts/install-tools.sh")
    namespace = f"{LESSON_NAMESPACE}-{uuid.uuid4().hex[:6]}"
    lab = StudentLab(control_plane, find_lesson(LESSON_ID), namespace)
    try:
        yield lab
    finally:
        lab.admin.delete("v1", "Namespace", namespace)


def test_the_student_walks_the_lesson_with_its_solve_scripts(lab: StudentLab) -> None:
    """Every exercise in order: its checks fail, its solve script succeeds, they pass; then
    solve scripts run again change nothing, and an earlier exercise's script brings its own
    state back (canary-steps starts v2 over from v1 up to the 25% pause)."""
    with FakeArgoRollouts(lab.admin, lab.namespace) as controller:
        for exercise in lab.loaded.lesson.exercises:
            exercise = lab.exercise(exercise.id)
            before = lab.outcome(exercise)
            proc = lab.solve(exercise)
            assert proc.returncode == 0, f"{exercise.id}: {proc.stdout}{proc.stderr}"
            after = lab.outcome(exercise)
            failing = {k: r.message for k, r in after.items() if r.status is not Status.PASSED}
            assert not failing, f"{exercise.id}: {failing}\n{proc.stdout}"
            if not exercise.passes_before_solve:
                assert any(r.status is not Status.PASSED for r in before.values()), exercise.id
        for exercise_id in ("canary-analysis", "canary-finish", "canary-steps", "explore-rollouts"):
            exercise = lab.exercise(exercise_id)
            proc = lab.solve(exercise)
            assert proc.returncode == 0, f"{exercise_id} again: {proc.stdout}{proc.stderr}"
            after = lab.outcome(exercise)
            failing = {k: r.message for k, r in after.items() if r.status is not Status.PASSED}
            assert not failing, f"{exercise_id} again: {failing}\n{proc.stdout}"
    assert controller.errors == []
