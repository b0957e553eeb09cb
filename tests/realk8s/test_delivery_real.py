"""The progressive-delivery checks (Flagger, Argo Rollouts) and ``metrics-query`` on the
real kube-apiserver, through the real ``Kube`` client.

The objects are the recorded states under ``tests/fixtures/delivery/`` (shapes as Flagger
v1.44 and Argo Rollouts v1.8 write them), put into the real server the way the controllers
write them, against the upstream CRDs (adapted to v1.20, :mod:`crds`):

* the object is created, then its ``status`` goes through the status subresource where
  the kind has one: ``PUT .../canaries/NAME/status`` as Flagger's ``UpdateStatus``, a
  merge patch of ``.../rollouts/NAME/status`` as Argo Rollouts' ``persistRolloutStatus``.
  The real server drops a ``status`` sent with the create of such a kind, so it cannot be
  written in one step. An AnalysisRun has no status subresource (Argo's CRD declares
  none), so its status is part of the object as created, as Argo's analysis controller
  keeps it in the object itself;
* Deployments and ReplicaSets get their status from the real controllers here (their
  pods made Ready by the node agent), not from the recording;
* owner references point at the uids the owners got (the real garbage collector deletes
  an object whose owner's uid does not exist), so owners are created first;
* each recorded object must come back whole: a field the CRD schema would prune, or a
  value it would refuse, fails the load (:func:`lost_fields`), since a real controller
  could not have written it either.

Each test gets a fresh namespace (:func:`namespace`), so the recordings' namespaces
(``canary-lab``, ``rollouts-lab``) are renamed to it, in messages too (Flagger names the
canary ``name.namespace`` in its events), and so are the expected messages.

VictoriaMetrics is a stand-in HTTP server of the test's own on 127.0.0.1, behind a real
Service and a pod the node agent runs: the check's query goes through the API server's
service proxy, the Endpoints the real endpoints controller made, and the agent's pod
network to it.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from support import send_json

from kubelab.checks.registry import CheckContext
from kubelab.checks.result import CheckResult, Status
from kubelab.checks.runner import run_check
from kubelab.checks.types import CHECK_TYPES
from kubelab.classroom.access import student_rules
from kubelab.cluster.kube import Kube
from kubelab.components.catalog import CATALOG
from kubelab.retry import RetryPolicy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "delivery"
RECORDED_NAMESPACES = ("canary-lab", "rollouts-lab")
V1_HASH, V2_HASH = "7c9d5f8b6", "5f6b8d9c74"
APP_IMAGE = "gitea.kubelab.local/course/app-backend"
FLAGGER_API = "flagger.app/v1beta1"
ROLLOUTS_API = "argoproj.io/v1alpha1"
# The Service and port kubelab's catalog queries VictoriaMetrics at (its namespace is the
# module's own here: the session's control plane is shared).
_, VM_SERVICE, VM_PORT = CATALOG["victoria-metrics"].api or ("", "", 0)

pytestmark = pytest.mark.timeout(120)


# -- VictoriaMetrics stand-in ------------------------------------------------------------------


class VictoriaMetrics(ThreadingHTTPServer):
    """Answers every GET with ``answer`` (HTTP status, JSON body); records what it got."""

    def __init__(self) -> None:
        self.answer: tuple[int, str] = (200, "{}")
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        vm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                vm.requests.append((url.path, query, dict(self.headers)))
                status, body = vm.answer
                send_json(self, status, body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def _endpoints_ready(kube: Kube, service: str, namespace: str) -> bool:
    endpoints = kube.get("v1", "Endpoints", service, namespace) or {}
    return any(s.get("addresses") for s in endpoints.get("subsets") or [])


@pytest.fixture(scope="module")
def victoria_metrics(control_plane: Any) -> Iterator[tuple[VictoriaMetrics, str]]:
    """The stand-in, reachable as Service ``VM_SERVICE:VM_PORT`` in its own namespace."""
    namespace = control_plane.create_namespace(f"monitoring-{uuid.uuid4().hex[:6]}")
    kube = control_plane.kube()
    server = VictoriaMetrics()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    labels = {"app.kubernetes.io/name": "victoria-metrics-single"}
    try:
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": VM_SERVICE, "namespace": namespace},
                "spec": {
                    "selector": labels,
                    "ports": [{"name": "http", "port": VM_PORT, "targetPort": "http"}],
                },
            }
        )
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{VM_SERVICE}-0", "namespace": namespace, "labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "vmsingle",
                            "image": "victoriametrics/victoria-metrics",
                            "ports": [{"name": "http", "containerPort": 8428}],
                        }
                    ]
                },
            }
        )
        control_plane.agent.pod_servers[(namespace, f"{VM_SERVICE}-0", 8428)] = (
            server.server_address[:2]
        )
        kube.wait_for(
            lambda: _endpoints_ready(kube, VM_SERVICE, namespace),
            timeout=30,
            what=f"the endpoints of {VM_SERVICE}",
        )
        yield server, namespace
    finally:
        server.shutdown()
        server.server_close()
        kube.delete("v1", "Namespace", namespace)


# -- recorded states into the real server ------------------------------------------------------


def lost_fields(recorded: Any, live: Any, path: str = "") -> list[str]:
    """Where ``live`` lacks or changed what ``recorded`` holds (extra fields are fine)."""
    if isinstance(recorded, dict):
        if not isinstance(live, dict):
            return [f"{path or '.'}: {live!r}"]
        out = []
        for key, value in recorded.items():
            if key not in live or live[key] is None:
                if value not in ({}, [], None):
                    out.append(f"{path}.{key} (pruned)")
            else:
                out += lost_fields(value, live[key], f"{path}.{key}")
        return out
    if isinstance(recorded, list):
        if not isinstance(live, list) or len(live) != len(recorded):
            return [f"{path}: {live!r}"]
        return [
            x
            for i, (a, b) in enumerate(zip(recorded, live, strict=True))
            for x in lost_fields(a, b, f"{path}[{i}]")
        ]
    return [] if recorded == live else [f"{path}: {recorded!r} became {live!r}"]


# Kinds whose status the real controller-manager writes here (pods made Ready by the agent).
CONTROLLER_STATUS = {("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet")}
# How each controller writes its status: "replace" (UpdateStatus) or "merge" (a merge patch).
STATUS_WRITE = {(FLAGGER_API, "Canary"): "replace", (ROLLOUTS_API, "Rollout"): "merge"}


class Lab:
    """One test's namespace on the real server and the recorded objects loaded into it."""

    def __init__(self, control_plane: Any, namespace: str, kube: Kube) -> None:
        self.control_plane = control_plane
        self.ns = namespace
        self.kube = kube
        self.uids: dict[tuple[str, str], str] = {}
        self.services: dict[str, tuple[str, str, int]] = {}
        self.vm: VictoriaMetrics | None = None
        self.frozen = False  # shared by several tests: read only

    def _change(self) -> None:
        assert not self.frozen, "this Lab is shared by several tests: load into a fresh one"

    def resource(self, api_version: str, kind: str) -> Any:
        # The official client's dynamic resource (Kube's own, so discovery is shared).
        return self.kube._resource(api_version, kind)

    def fixture_docs(self, name: str) -> list[dict[str, Any]]:
        text = (FIXTURES / f"{name}.yaml").read_text()
        for recorded in RECORDED_NAMESPACES:
            text = text.replace(recorded, self.ns)
        return [d for d in yaml.safe_load_all(text) if d]

    def load(self, *names: str) -> None:
        for name in names:
            docs = [d for d in self.fixture_docs(name) if d["kind"] != "Namespace"]
            owners = {
                (ref["kind"], ref["name"])
                for d in docs
                for ref in d["metadata"].get("ownerReferences") or []
            }
            # Owners first (stable sort): their dependents need their real uids.
            docs.sort(key=lambda d: (d["kind"], d["metadata"]["name"]) not in owners)
            for doc in docs:
                self.create(doc)

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Create ``doc``, then write its status as its controller does; the live object.

        The server gives a new object generation 1: a recorded status that had observed
        the recorded generation is made to observe that one."""
        self._change()
        doc = copy.deepcopy(doc)
        api_version, kind, meta = doc["apiVersion"], doc["kind"], doc["metadata"]
        meta["namespace"] = self.ns
        for ref in meta.get("ownerReferences") or []:
            ref["uid"] = self.uids[(ref["kind"], ref["name"])]
        involved = doc.get("involvedObject") or {}
        if (involved.get("kind"), involved.get("name")) in self.uids:
            involved["uid"] = self.uids[(involved["kind"], involved["name"])]
        recorded_generation = meta.pop("generation", None)
        how = STATUS_WRITE.get((api_version, kind))
        status = doc.pop("status", None) if how else None
        if (api_version, kind) in CONTROLLER_STATUS:
            doc.pop("status", None)  # the real controllers write it
        resource = self.resource(api_version, kind)
        live = resource.create(body=doc, namespace=self.ns).to_dict()
        self.uids[(kind, meta["name"])] = live["metadata"]["uid"]
        if status is not None:
            observed = status.get("observedGeneration")
            if recorded_generation is not None and str(observed) == str(recorded_generation):
                status["observedGeneration"] = type(observed)(live["metadata"]["generation"])
            live = self.write_status(api_version, kind, meta["name"], status, str(how))
            doc["status"] = status
        problems = lost_fields(
            {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
            | {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}},
            {k: v for k, v in live.items() if k not in ("apiVersion", "kind", "metadata")}
            | {
                "labels": live["metadata"].get("labels") or {},
                "annotations": live["metadata"].get("annotations") or {},
            },
        )
        assert not problems, f"the real server did not keep {kind} {meta['name']}: {problems}"
        return live

    def write_status(
        self, api_version: str, kind: str, name: str, status: dict[str, Any], how: str
    ) -> dict[str, Any]:
        status_api = self.resource(api_version, kind).subresources["status"]
        if how == "replace":
            live = self.resource(api_version, kind).get(name=name, namespace=self.ns).to_dict()
            live["status"] = status
            return dict(status_api.replace(body=live, namespace=self.ns).to_dict())
        return dict(
            status_api.patch(
                body={"status": status},
                name=name,
                namespace=self.ns,
                content_type="application/merge-patch+json",
            ).to_dict()
        )

    def set_status(self, api_version: str, kind: str, name: str, **fields: Any) -> None:
        """Change some status fields (None removes one), as a whole new status: UpdateStatus."""
        self._change()
        live = self.resource(api_version, kind).get(name=name, namespace=self.ns).to_dict()
        status = {**(live.get("status") or {}), **fields}
        status = {k: v for k, v in status.items() if v is not None}
        self.write_status(api_version, kind, name, status, "replace")

    def patch(self, api_version: str, kind: str, name: str, body: Any, strategic: bool) -> None:
        """A student's change: ``kubectl set image`` is a strategic merge patch on a
        Deployment; custom resources take a merge patch only."""
        self._change()
        content_type = (
            "application/strategic-merge-patch+json"
            if strategic
            else "application/merge-patch+json"
        )
        self.resource(api_version, kind).patch(
            body=body, name=name, namespace=self.ns, content_type=content_type
        )

    def events(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.resource("v1", "Event").get(namespace=self.ns).items]

    def replace_event(self, event: dict[str, Any]) -> None:
        self._change()
        self.resource("v1", "Event").replace(body=event, namespace=self.ns)

    def delete_event(self, name: str) -> None:
        self._change()
        self.resource("v1", "Event").delete(name=name, namespace=self.ns)

    def check(self, kube: Kube | None = None, **params: Any) -> CheckResult:
        """Validate ``params`` as a lesson's check and run it as ``kubelab check`` does."""
        params.setdefault("namespace", self.ns)
        spec = msgspec.convert(params, CHECK_TYPES[params["type"]])
        ctx = CheckContext(kube=kube or self.kube, sampler=_no_sampler, services=self.services)
        return run_check(spec, ctx)


def _no_sampler(spec: Any) -> Any:
    raise AssertionError("these checks send no traffic")


@pytest.fixture(scope="module")
def admin(control_plane: Any, upstream_crds: list[str]) -> Kube:
    """One admin client for the module (its API discovery done once)."""
    kube: Kube = control_plane.kube()
    return kube


@pytest.fixture
def lab(control_plane: Any, admin: Kube, namespace: str) -> Lab:
    """A fresh namespace, for a test that changes what it loaded."""
    return Lab(control_plane, namespace, admin)


Recorded = Callable[..., Lab]


@pytest.fixture(scope="module")
def recorded(control_plane: Any, admin: Kube) -> Iterator[Recorded]:
    """``recorded(*fixtures)``: those recorded states loaded once for the module, in a
    namespace of their own, for the tests that only read them (loading is most of a
    test's time on the real server)."""
    labs: dict[tuple[str, ...], Lab] = {}

    def get(*names: str) -> Lab:
        if names not in labs:
            namespace = control_plane.create_namespace(f"delivery-{uuid.uuid4().hex[:8]}")
            lab = Lab(control_plane, namespace, admin)
            lab.load(*names)
            lab.frozen = True
            labs[names] = lab
        return labs[names]

    yield get
    for lab in labs.values():
        admin.delete("v1", "Namespace", lab.ns)


def expect(result: CheckResult, status: Status, *facts: str) -> None:
    """The result has ``status`` and its message names every fact."""
    assert result.status is status, result
    for fact in facts:
        assert fact in result.message, f"{fact!r} not in {result.message!r}"


# -- flagger-canary ----------------------------------------------------------------------------

CANARY = {"type": "flagger-canary", "name": "app-backend"}


def test_canary_still_analysing_is_pending_with_its_weight(recorded: Recorded) -> None:
    lab = recorded("flagger-progressing")
    result = lab.check(**CANARY, phase=["Succeeded"], primary_tag="v2")
    expect(result, Status.PENDING, f"Canary {lab.ns}/app-backend", "Progressing")
    expect(result, Status.PENDING, "canary weight 20%", "0 failed checks", "Succeeded")
    assert f"kubectl describe canary app-backend -n {lab.ns}" in (result.hint or "")
    assert result.evidence["canary_weight"] == 20
    assert result.evidence["max_event_weight"] == 20


def test_canary_weight_events_are_only_this_canarys(recorded: Recorded) -> None:
    # app-frontend's "canary weight 50" event sits in the same namespace.
    lab = recorded("flagger-progressing")
    reached = lab.check(**CANARY, phase=["Progressing"], reached_weight=20)
    expect(reached, Status.PASSED, "Progressing", "canary weight reached 20%")
    not_yet = lab.check(**CANARY, phase=["Progressing"], reached_weight=50)
    expect(not_yet, Status.PENDING, "weight got to 20% at most", "at least 50%")


def test_canary_promoted_passes_with_primary_tag_weight_and_events(recorded: Recorded) -> None:
    lab = recorded("flagger-succeeded")
    result = lab.check(
        **CANARY,
        phase=["Succeeded"],
        primary_tag="v2",
        reached_weight=50,
        events=["Promotion completed", f"copying app-backend.{lab.ns} template spec"],
    )
    expect(result, Status.PASSED, "Succeeded", "reached 50%", f"the primary runs {APP_IMAGE}:v2")
    assert result.evidence["primary_image"] == f"{APP_IMAGE}:v2"


def test_promotion_proves_max_weight_when_events_were_merged(lab: Lab) -> None:
    # client-go merges an object's 11th distinct message within 10 minutes into one
    # "(combined from similar events)" event that each later message overwrites: the
    # "canary weight 30/40/50" events are gone, the merged one shows the last message.
    lab.load("flagger-succeeded")
    merged = False
    for event in lab.events():
        text = event["message"]
        name = event["metadata"]["name"]
        if any(f"canary weight {w}" in text for w in (30, 40, 50)) or "Copying" in text:
            if not merged:
                event["message"] = (
                    "(combined from similar events): Promotion completed! Scaling down "
                    f"app-backend.{lab.ns}"
                )
                event["count"] = 6
                event["lastTimestamp"] = "2025-06-10T14:04:30Z"
                lab.replace_event(event)
                merged = True
            else:
                lab.delete_event(name)
        elif text.startswith("Promotion completed") or text.startswith("Routing all"):
            lab.delete_event(name)
    result = lab.check(
        **CANARY, phase=["Succeeded"], reached_weight=50, events=["Promotion completed"]
    )
    expect(result, Status.PASSED, "reached 50% (Flagger promotes at maxWeight)")
    assert result.evidence["max_event_weight"] == 20
    assert result.evidence["reached_weight_source"] == "promoted at maxWeight"


def test_canary_promoted_with_the_wrong_primary_image_fails(recorded: Recorded) -> None:
    lab = recorded("flagger-succeeded")
    result = lab.check(**CANARY, phase=["Succeeded"], primary_tag="v3", reached_weight=60)
    expect(
        result,
        Status.FAILED,
        "is Succeeded, but the primary Deployment app-backend-primary runs "
        f"{APP_IMAGE}:v2, expected tag v3",
        "got to 50% at most in its latest analysis, expected at least 60%",
    )


def test_canary_promoted_when_the_exercise_wants_a_rollback_fails_with_the_way_out(
    recorded: Recorded,
) -> None:
    lab = recorded("flagger-succeeded")
    result = lab.check(**CANARY, phase=["Failed"])
    expect(result, Status.FAILED, "was promoted (Succeeded)", "wants the analysis to fail")
    expect(result, Status.FAILED, "/status/500")


def test_canary_rolled_back_passes_when_failure_is_wanted(recorded: Recorded) -> None:
    lab = recorded("flagger-failed")
    result = lab.check(
        **CANARY, phase=["Failed"], primary_tag="v1", events=["Rolling back", "Canary failed!"]
    )
    expect(result, Status.PASSED, "Failed", "failed checks", "reached 20%", "app-backend:v1")
    assert result.evidence["failed_checks"] == 5


def test_canary_rolled_back_when_promotion_is_wanted_says_why(recorded: Recorded) -> None:
    lab = recorded("flagger-failed")
    result = lab.check(**CANARY, phase=["Succeeded"])
    expect(
        result,
        Status.FAILED,
        "Failed: Flagger rolled back the canary",
        f"Rolling back app-backend.{lab.ns} failed checks threshold reached 5",
        "advancement success rate 38.08% < 99%",
        "start a new revision",
    )


def test_canary_missing_event_is_named(recorded: Recorded) -> None:
    lab = recorded("flagger-failed")
    result = lab.check(**CANARY, phase=["Failed"], events=["request duration"])
    expect(
        result,
        Status.FAILED,
        "no event of the canary's latest analysis mentions 'request duration'",
        f"Canary failed! Scaling down app-backend.{lab.ns}",
    )


def test_only_the_latest_analysis_counts(lab: Lab) -> None:
    # Promoted at 50% before; the next revision is halted at 20% and rolled back. The
    # repeated messages ("New revision detected", "canary weight 10/20") are folded into one
    # event each by Kubernetes, their lastTimestamp moved to this run.
    lab.load("flagger-succeeded")
    later = {
        f"New revision detected! Scaling up app-backend.{lab.ns}": "2025-06-10T14:10:00Z",
        f"Advance app-backend.{lab.ns} canary weight 10": "2025-06-10T14:10:30Z",
        f"Advance app-backend.{lab.ns} canary weight 20": "2025-06-10T14:10:45Z",
    }
    for event in lab.events():
        if event["message"] in later:
            event["lastTimestamp"] = later[event["message"]]
            event["count"] = 2
            lab.replace_event(event)
    lab.create(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "app-backend.1847a2b9c0d3f900", "namespace": lab.ns},
            "involvedObject": {"kind": "Canary", "name": "app-backend", "namespace": lab.ns},
            "reason": "Synced",
            "message": f"Rolling back app-backend.{lab.ns} failed checks threshold reached 5",
            "type": "Warning",
            "lastTimestamp": "2025-06-10T14:12:00Z",
        }
    )
    lab.set_status(FLAGGER_API, "Canary", "app-backend", phase="Failed")
    result = lab.check(
        **CANARY, phase=["Failed"], reached_weight=50, events=["Promotion completed"]
    )
    expect(
        result,
        Status.FAILED,
        "got to 20% at most in its latest analysis, expected at least 50%",
        "no event of the canary's latest analysis mentions 'Promotion completed'",
    )
    assert result.evidence["max_event_weight"] == 20


def test_canary_that_does_not_exist_fails(recorded: Recorded) -> None:
    lab = recorded("flagger-progressing")
    result = lab.check(**{**CANARY, "name": "app-frontend"}, phase=["Succeeded"])
    expect(result, Status.FAILED, f"Canary {lab.ns}/app-frontend does not exist")
    assert f"kubectl get canaries -n {lab.ns}" in (result.hint or "")


def test_new_revision_not_picked_up_yet_is_pending_not_a_stale_pass(lab: Lab) -> None:
    lab.load("flagger-succeeded")
    # The student's next change (`kubectl set image`): Flagger still shows the previous
    # run's Succeeded.
    lab.patch(
        "apps/v1",
        "Deployment",
        "app-backend",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": f"{APP_IMAGE}:v3"}]}}
            }
        },
        strategic=True,
    )
    result = lab.check(**CANARY, phase=["Failed"])
    expect(
        result,
        Status.PENDING,
        "still Succeeded from the previous revision",
        f"{APP_IMAGE}:v3",
        f"the primary runs {APP_IMAGE}:v2",
    )


def test_canary_without_status_is_pending(lab: Lab) -> None:
    for doc in lab.fixture_docs("flagger-progressing"):
        if doc["kind"] == "Canary":
            doc.pop("status")
            lab.create(doc)
    result = lab.check(**CANARY, phase=["Succeeded"])
    expect(result, Status.PENDING, "no status yet", "Flagger")


def test_a_status_sent_with_the_create_is_dropped_by_the_real_server(lab: Lab) -> None:
    """Why the recorded states go in as two writes: with a status subresource, the real
    server ignores ``status`` on create (the emulator test had to imitate it)."""
    (canary,) = [d for d in lab.fixture_docs("flagger-progressing") if d["kind"] == "Canary"]
    canary["metadata"]["namespace"] = lab.ns
    created = lab.resource(FLAGGER_API, "Canary").create(body=canary, namespace=lab.ns).to_dict()
    assert not created.get("status")
    expect(lab.check(**CANARY, phase=["Progressing"]), Status.PENDING, "no status yet")


def test_what_the_crd_schema_does_not_declare_is_pruned_and_the_load_notices(lab: Lab) -> None:
    """The emulator kept any field it was given; the real server prunes what the CRD's
    structural schema does not declare, and refuses a value of the wrong type. So a
    recording holding such a field fails to load here (a controller could not have
    written it), and a check can never see one: ``spec.canaryAnalysis``, the v1alpha3 name
    that :func:`~kubelab.checks.flagger.flagger_max_weight` still reads, is gone from
    every Canary the v1beta1 API stores."""
    from kubernetes.client.exceptions import ApiException

    (canary,) = [d for d in lab.fixture_docs("flagger-succeeded") if d["kind"] == "Canary"]
    canary["spec"]["canaryAnalysis"] = canary["spec"]["analysis"]
    canary["status"]["canaryWeigth"] = 50  # a typo
    with pytest.raises(AssertionError) as lost:
        lab.create(canary)
    assert ".spec.canaryAnalysis (pruned)" in str(lost.value)
    assert ".status.canaryWeigth (pruned)" in str(lost.value)
    live = lab.kube.get(FLAGGER_API, "Canary", "app-backend", lab.ns) or {}
    assert "canaryAnalysis" not in live["spec"] and "canaryWeigth" not in live["status"]
    with pytest.raises(ApiException) as refused:
        lab.set_status(FLAGGER_API, "Canary", "app-backend", failedChecks="five")
    assert refused.value.status == 422
    assert "status.failedChecks in body must be of type number" in str(refused.value.body)


# -- rollout-status ----------------------------------------------------------------------------

ROLLOUT = {"type": "rollout-status", "name": "app-backend"}


def test_bluegreen_paused_before_promotion_passes_as_paused(recorded: Recorded) -> None:
    lab = recorded("rollout-bluegreen-paused")
    result = lab.check(**ROLLOUT, phase=["Paused"], paused=True, stable_tag="v1")
    expect(result, Status.PASSED, f"Rollout {lab.ns}/app-backend is Paused", "BlueGreenPause")
    expect(result, Status.PASSED, f"stable {APP_IMAGE}:v1")
    assert result.evidence["paused"] is True


def test_bluegreen_paused_when_healthy_is_wanted_fails_with_the_promote_command(
    recorded: Recorded,
) -> None:
    lab = recorded("rollout-bluegreen-paused")
    result = lab.check(**ROLLOUT, phase=["Healthy"])
    expect(result, Status.FAILED, "Paused (BlueGreenPause)", "waits for a promotion", "Healthy")
    assert f"kubectl argo rollouts promote app-backend -n {lab.ns}" in (result.hint or "")


def test_bluegreen_promoted_is_healthy_on_the_new_stable_image(recorded: Recorded) -> None:
    lab = recorded("rollout-bluegreen-healthy")
    result = lab.check(**ROLLOUT, phase=["Healthy"], paused=False, stable_tag="v2")
    expect(result, Status.PASSED, "is Healthy", f"stable {APP_IMAGE}:v2")
    wrong = lab.check(**ROLLOUT, phase=["Healthy"], stable_tag="v1")
    expect(
        wrong,
        Status.FAILED,
        f"the stable ReplicaSet app-backend-{V2_HASH} ({APP_IMAGE}:v2) runs tag v2, expected v1",
    )


def test_rollout_aborted_by_analysis_is_degraded_with_the_reason(recorded: Recorded) -> None:
    lab = recorded("rollout-canary-degraded")
    result = lab.check(**ROLLOUT, phase=["Healthy"])
    expect(
        result,
        Status.FAILED,
        "is Degraded: RolloutAborted: Rollout aborted update to revision 2",
        'Metric "success-rate" assessed Failed due to failed (1) > failureLimit (0)',
    )
    hint = result.hint or ""
    assert f"kubectl get analysisrun -n {lab.ns}" in hint
    assert f"kubectl argo rollouts retry rollout app-backend -n {lab.ns}" in hint
    assert result.evidence["abort"] is True and result.evidence["canary_weight"] == 0
    wanted = lab.check(**ROLLOUT, phase=["Degraded"], step=0, canary_weight=0)
    expect(wanted, Status.PASSED, "Degraded", "at step 0 of 6", "canary weight 0%")


def test_rollout_progressing_is_pending_until_healthy(recorded: Recorded) -> None:
    lab = recorded("rollout-canary-progressing")
    result = lab.check(**ROLLOUT, phase=["Healthy"])
    expect(
        result,
        Status.PENDING,
        "Progressing (more replicas need to be updated) at step 2 of 6",
        "not Healthy yet",
    )


def test_rollout_step_and_weight_are_compared(recorded: Recorded) -> None:
    lab = recorded("rollout-canary-progressing")
    result = lab.check(**ROLLOUT, phase=["Progressing"], step=2, canary_weight=20)
    expect(result, Status.PASSED, "at step 2 of 6", "canary weight 20%")
    assert result.evidence["weight_source"] == "status.canary.weights"
    ahead = lab.check(**ROLLOUT, phase=["Progressing", "Paused"], step=3, canary_weight=50)
    expect(
        ahead,
        Status.PENDING,
        "it is at step 2, expected step 3",
        "the canary weight is 20%, expected 50%",
    )


def test_rollout_weight_without_traffic_routing_comes_from_the_steps(lab: Lab) -> None:
    lab.load("rollout-canary-progressing")
    lab.set_status(
        ROLLOUTS_API,
        "Rollout",
        "app-backend",
        canary={},
        currentStepIndex=4,
        phase="Paused",
        message="CanaryPauseStep",
        pauseConditions=[{"reason": "CanaryPauseStep", "startTime": "2025-06-10T16:04:00Z"}],
        controllerPause=True,
    )
    result = lab.check(**ROLLOUT, phase=["Paused"], step=4, canary_weight=50, paused=True)
    expect(result, Status.PASSED, "Paused (CanaryPauseStep) at step 4 of 6", "weight 50%")
    assert result.evidence["weight_source"] == "steps"
    # Step 4 is `pause: {duration: 30s}`: it ends by itself, so Healthy is only pending.
    timed = lab.check(**ROLLOUT, phase=["Healthy"])
    expect(timed, Status.PENDING, "a pause of 30s that ends by itself")


def test_rollout_spec_change_not_observed_yet_is_pending(lab: Lab) -> None:
    lab.load("rollout-bluegreen-healthy")
    lab.patch(
        ROLLOUTS_API,
        "Rollout",
        "app-backend",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:v3"}]}}}},
        strategic=False,
    )
    # The real server counts the spec change (the status did not: it has its subresource).
    live = lab.kube.get(ROLLOUTS_API, "Rollout", "app-backend", lab.ns) or {}
    assert live["metadata"]["generation"] == 2 and live["status"]["observedGeneration"] == "1"
    result = lab.check(**ROLLOUT, phase=["Paused"])
    expect(result, Status.PENDING, "waiting for rollout spec update to be observed")
    healthy = lab.check(**ROLLOUT, phase=["Healthy"])
    expect(healthy, Status.PENDING, "not Healthy yet")


def test_a_status_write_leaves_the_generation_alone(lab: Lab) -> None:
    """On the real server only a spec change moves ``metadata.generation``: a controller
    writing status (as Argo does at each step) never makes the Rollout look unobserved."""
    lab.load("rollout-canary-progressing")
    lab.set_status(ROLLOUTS_API, "Rollout", "app-backend", currentStepIndex=3)
    live = lab.kube.get(ROLLOUTS_API, "Rollout", "app-backend", lab.ns) or {}
    assert live["metadata"]["generation"] == 1
    result = lab.check(**ROLLOUT, phase=["Progressing"], step=3)
    expect(result, Status.PASSED, "at step 3 of 6")


def test_healthy_rollout_when_an_update_is_wanted_fails(recorded: Recorded) -> None:
    lab = recorded("rollout-bluegreen-healthy")
    result = lab.check(**ROLLOUT, phase=["Paused"])
    expect(result, Status.FAILED, "is Healthy: no update is in progress", "set image")


def test_rollout_that_does_not_exist_fails(recorded: Recorded) -> None:
    lab = recorded("rollout-bluegreen-healthy")
    result = lab.check(**{**ROLLOUT, "name": "app-frontend"}, phase=["Healthy"])
    expect(result, Status.FAILED, f"Rollout {lab.ns}/app-frontend does not exist")


# -- rollout-services --------------------------------------------------------------------------

SERVICES = {"type": "rollout-services", "rollout": "app-backend"}


def test_bluegreen_before_promotion_active_is_v1_and_preview_is_v2(recorded: Recorded) -> None:
    lab = recorded("rollout-bluegreen-paused")
    result = lab.check(**SERVICES, expect={"app-backend-active": "v1", "app-backend-preview": "v2"})
    expect(
        result,
        Status.PASSED,
        f"app-backend-active -> app-backend-{V1_HASH} ({APP_IMAGE}:v1)",
        f"app-backend-preview -> app-backend-{V2_HASH} ({APP_IMAGE}:v2)",
    )
    assert result.evidence["selected"]["app-backend-preview"]["pod_hash"] == V2_HASH


def test_service_selecting_the_wrong_version_fails_with_what_it_selects(recorded: Recorded) -> None:
    lab = recorded("rollout-bluegreen-paused")
    result = lab.check(**SERVICES, expect={"app-backend-active": "v2", "app-backend-preview": "v2"})
    expect(
        result,
        Status.FAILED,
        f"Service app-backend-active selects ReplicaSet app-backend-{V1_HASH} "
        f"({APP_IMAGE}:v1), tag v1; expected tag v2",
        "; the Rollout is Paused (BlueGreenPause)",
    )
    assert "app-backend-preview" not in result.message


def test_service_not_managed_by_the_rollout_is_explained(recorded: Recorded) -> None:
    lab = recorded("rollout-bluegreen-paused")
    result = lab.check(**SERVICES, expect={"app-backend": "v2", "app-backend-gone": "v2"})
    expect(
        result,
        Status.FAILED,
        "Service app-backend is not managed by Argo Rollouts",
        "activeService, previewService, canaryService or stableService",
        "activeService: app-backend-active, previewService: app-backend-preview",
        "Service app-backend-gone does not exist",
    )


def test_bluegreen_after_promotion_both_services_select_v2(recorded: Recorded) -> None:
    lab = recorded("rollout-bluegreen-healthy")
    result = lab.check(**SERVICES, expect={"app-backend-active": "v2", "app-backend-preview": "v2"})
    expect(result, Status.PASSED, f"app-backend-active -> app-backend-{V2_HASH}")


def test_canary_services_during_a_progressing_update(recorded: Recorded) -> None:
    lab = recorded("rollout-canary-progressing")
    ok = lab.check(**SERVICES, expect={"app-backend-canary": "v2", "app-backend-stable": "v1"})
    expect(ok, Status.PASSED, "app-backend-canary ->", "app-backend-stable ->")
    # Still moving: a mismatch now may be fixed by the controller in a moment.
    moving = lab.check(**SERVICES, expect={"app-backend-stable": "v2"})
    expect(moving, Status.PENDING, "Progressing", "app-backend-stable selects")


def test_the_services_lead_to_the_ready_pods_of_their_replicaset(recorded: Recorded) -> None:
    """What the check infers from the selectors is what the real endpoints controller
    does: each Service's Endpoints are the pods the real ReplicaSet controller made for
    the ReplicaSet the check names."""
    lab = recorded("rollout-bluegreen-paused")
    kube = lab.kube
    for service, pod_hash in (("app-backend-active", V1_HASH), ("app-backend-preview", V2_HASH)):
        rs = kube.get("apps/v1", "ReplicaSet", f"app-backend-{pod_hash}", lab.ns) or {}
        replicas = rs["spec"]["replicas"]

        def addresses(service: str = service) -> list[dict[str, Any]]:
            endpoints = kube.get("v1", "Endpoints", service, lab.ns) or {}
            return [a for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []]

        kube.wait_for(
            lambda replicas=replicas, addresses=addresses: len(addresses()) == replicas,
            timeout=60,
            what=f"the endpoints of {service}",
        )
        pods = {a["targetRef"]["name"] for a in addresses()}
        assert all(p.startswith(f"app-backend-{pod_hash}-") for p in pods), pods
    result = lab.check(**SERVICES, expect={"app-backend-active": "v1", "app-backend-preview": "v2"})
    expect(result, Status.PASSED, f"app-backend-active -> app-backend-{V1_HASH}")


# -- analysisrun-result ------------------------------------------------------------------------

RUN = {"type": "analysisrun-result", "rollout": "app-backend"}


def test_successful_prepromotion_analysis_passes_with_its_values(recorded: Recorded) -> None:
    lab = recorded("rollout-bluegreen-paused", "analysisrun-pre-successful")
    result = lab.check(**RUN, template="success-rate")
    expect(
        result,
        Status.PASSED,
        f"AnalysisRun app-backend-{V2_HASH}-2-pre of AnalysisTemplate success-rate is Successful",
        "metric success-rate Successful, value [0.99]",
        "3 successful",
        "successCondition result[0] >= 0.95",
    )
    assert result.evidence["rollout_type"] == "PrePromotion"


def test_one_run_of_two_templates_is_judged_per_template(lab: Lab) -> None:
    lab.load("rollout-bluegreen-paused", "analysisrun-pre-two-templates")
    templates = [{"templateName": "load-test"}, {"templateName": "success-rate"}]
    lab.patch(
        ROLLOUTS_API,
        "Rollout",
        "app-backend",
        {"spec": {"strategy": {"blueGreen": {"prePromotionAnalysis": {"templates": templates}}}}},
        strategic=False,
    )
    load_test = lab.check(**RUN, template="load-test")
    expect(
        load_test,
        Status.PASSED,
        f"AnalysisRun app-backend-{V2_HASH}-2-pre is Failed",
        "its metrics from AnalysisTemplate load-test (load-test) are Successful",
        "metric load-test Successful (1 measurement: 1 successful)",
    )
    success_rate = lab.check(**RUN, template="success-rate")
    expect(
        success_rate,
        Status.FAILED,
        "its metrics from AnalysisTemplate success-rate (success-rate) are Failed",
        "metric success-rate Failed, value [0.42]",
        "expected Successful: a metric missed its successCondition",
    )
    assert success_rate.evidence["run_phase"] == "Failed"


def test_failed_analysis_shows_the_value_against_the_condition(recorded: Recorded) -> None:
    lab = recorded("rollout-canary-degraded", "analysisrun-step-failed")
    result = lab.check(**RUN, template="success-rate", expect="Successful")
    expect(
        result,
        Status.FAILED,
        f"AnalysisRun app-backend-{V2_HASH}-2-2 of AnalysisTemplate success-rate is Failed",
        'Metric "success-rate" assessed Failed due to failed (1) > failureLimit (0)',
        "metric success-rate Failed, value [0.42]",
        "[successCondition result[0] >= 0.95]",
        "a metric missed its successCondition",
    )
    assert "kubectl describe analysisrun" in (result.hint or "")
    assert result.evidence["metrics"][0]["value"] == "[0.42]"
    wanted = lab.check(**RUN, expect="Failed")
    expect(wanted, Status.PASSED, "is Failed", "[0.42]")


def test_empty_query_result_error_is_explained(recorded: Recorded) -> None:
    lab = recorded("rollout-canary-degraded", "analysisrun-step-error")
    result = lab.check(**RUN, template="success-rate")
    expect(
        result,
        Status.FAILED,
        "is Error",
        "'reflect: slice index out of range'",
        "5 error",
        "the query returned no data",
        "or vector(0)",
        "a metric could not be measured",
    )
    assert result.evidence["empty_result"] is True
    as_error = lab.check(**RUN, expect="Error")
    expect(as_error, Status.PASSED, "is Error", "the query returned no data")
    as_failed = lab.check(**RUN, expect="Failed")
    expect(as_failed, Status.FAILED, "an Error is not a Failed", "the query returned no data")


def test_running_analysis_is_pending(recorded: Recorded) -> None:
    lab = recorded("rollout-canary-progressing", "analysisrun-step-running")
    result = lab.check(**RUN, template="success-rate", expect="Successful")
    expect(result, Status.PENDING, "is Running", "value [0.97]", "1 measurement: 1 successful")


def test_no_analysisrun_yet_is_pending(recorded: Recorded) -> None:
    lab = recorded("rollout-canary-progressing")
    result = lab.check(**RUN, template="success-rate")
    expect(
        result,
        Status.PENDING,
        f"no AnalysisRun of AnalysisTemplate success-rate of Rollout {lab.ns}/app-backend yet",
        "has not reached its analysis step (step 2)",
    )


def test_runs_of_other_origins_and_templates_are_told_apart(recorded: Recorded) -> None:
    # A pre-promotion run of the blue/green strategy is no run of the canary's step 2.
    lab = recorded("rollout-canary-progressing", "analysisrun-pre-successful")
    result = lab.check(**RUN, template="success-rate")
    expect(result, Status.PENDING, "no AnalysisRun of AnalysisTemplate success-rate")
    unused = lab.check(**RUN, template="latency")
    expect(
        unused,
        Status.FAILED,
        "does not use AnalysisTemplate latency (and it does not exist); it uses success-rate",
    )


def test_the_latest_run_counts(lab: Lab) -> None:
    lab.load("rollout-canary-degraded", "analysisrun-step-failed")
    # Revision 1's run of the same step, created in the same second (creationTimestamp has
    # second precision): the revision annotation orders them.
    (older,) = lab.fixture_docs("analysisrun-step-failed")
    older["metadata"]["name"] = f"app-backend-{V1_HASH}-1-2"
    older["metadata"]["annotations"]["rollout.argoproj.io/revision"] = "1"
    older["status"]["phase"] = "Successful"
    lab.create(older)
    result = lab.check(**RUN)
    expect(result, Status.FAILED, f"AnalysisRun app-backend-{V2_HASH}-2-2 is Failed")


def test_analysisrun_of_a_missing_rollout_fails(recorded: Recorded) -> None:
    lab = recorded("rollout-canary-progressing")
    result = lab.check(**{**RUN, "rollout": "app-frontend"})
    expect(result, Status.FAILED, f"Rollout {lab.ns}/app-frontend does not exist")


def test_analysisruns_go_with_their_rollout(lab: Lab) -> None:
    """The owner references the checks follow are real ones: deleting the Rollout, the
    real garbage collector deletes its AnalysisRuns and ReplicaSets."""
    lab.load("rollout-canary-degraded", "analysisrun-step-failed")
    kube = lab.kube
    assert kube.list(ROLLOUTS_API, "AnalysisRun", lab.ns)
    kube.delete(ROLLOUTS_API, "Rollout", "app-backend", lab.ns)
    kube.wait_for(
        lambda: (
            not kube.list(ROLLOUTS_API, "AnalysisRun", lab.ns)
            and not kube.list("apps/v1", "ReplicaSet", lab.ns)
        ),
        timeout=60,
        what="the garbage collector",
    )
    result = lab.check(**RUN)
    expect(result, Status.FAILED, f"Rollout {lab.ns}/app-backend does not exist")


# -- access: what the real server's RBAC makes of the checks -----------------------------------


def _as(lab: Lab, user: str) -> Kube:
    return lab.control_plane.kube(lab.control_plane.kubeconfig_for(user))


DELIVERY_CHECKS = (
    ("flagger-succeeded", {**CANARY, "phase": ["Succeeded"], "primary_tag": "v2"}),
    ("rollout-bluegreen-paused", {**ROLLOUT, "phase": ["Paused"], "stable_tag": "v1"}),
    ("rollout-bluegreen-paused", {**SERVICES, "expect": {"app-backend-active": "v1"}}),
    ("rollout-bluegreen-paused", {**RUN, "template": "success-rate"}),
)


def test_a_reader_without_rights_gets_could_not_check(recorded: Recorded) -> None:
    lab = recorded("flagger-succeeded", "rollout-bluegreen-paused", "analysisrun-pre-successful")
    nobody = _as(lab, f"nobody-{lab.ns}")
    for kind, (_, params) in zip(
        ("Canary", "Rollout", "Rollout", "Rollout"), DELIVERY_CHECKS, strict=True
    ):
        result = lab.check(kube=nobody, **params)
        expect(
            result, Status.ERROR, f"the cluster refused to show {kind} app-backend (403 Forbidden)"
        )
        assert "lack rights" in (result.hint or "")


def test_every_read_of_a_check_is_guarded(lab: Lab) -> None:
    """A reader who may see the Canary but not the Events gets "could not check" naming
    the Events, not a canary without history."""
    lab.load("flagger-succeeded")
    user = f"canary-reader-{lab.ns}"
    _grant(lab, user, [{"apiGroups": ["flagger.app"], "resources": ["canaries"], "verbs": ["get"]}])
    result = lab.check(kube=_as(lab, user), **CANARY, phase=["Succeeded"])
    expect(result, Status.ERROR, "the cluster refused to show Event list (403 Forbidden)")


def _grant(lab: Lab, user: str, rules: list[dict[str, Any]]) -> None:
    kube = lab.kube
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": user, "namespace": lab.ns},
            "rules": rules,
        }
    )
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": user, "namespace": lab.ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        }
    )


def test_a_student_of_a_class_runs_the_delivery_checks_in_their_namespace(lab: Lab) -> None:
    """The Role ``kubelab class create`` gives a student (:func:`student_rules` of both
    delivery lessons' components) lets every delivery check read what it needs: the
    student gets the results the instructor gets."""
    lab.load("flagger-succeeded", "rollout-bluegreen-paused", "analysisrun-pre-successful")
    user = f"student-{lab.ns}"
    components = ("istio", "flagger", "argo-rollouts", "victoria-metrics")
    _grant(lab, user, student_rules(components, []))
    student = _as(lab, user)
    for _, params in DELIVERY_CHECKS:
        as_admin, as_student = lab.check(**params), lab.check(kube=student, **params)
        assert as_admin.status is Status.PASSED, as_admin
        assert (as_student.status, as_student.message) == (as_admin.status, as_admin.message)


# -- metrics-query -----------------------------------------------------------------------------

QUERY = (
    'sum(rate(istio_requests_total{response_code!~"5.*"}[1m])) '
    "/ sum(rate(istio_requests_total[1m]))"
)


def _vector(*values: str) -> str:
    result = [{"metric": {}, "value": [1718031600.123, v]} for v in values]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


@pytest.fixture
def vm(control_plane: Any, admin: Kube, victoria_metrics: tuple[VictoriaMetrics, str]) -> Lab:
    """A Lab in the stand-in's namespace whose check context names it as the
    VictoriaMetrics API."""
    server, namespace = victoria_metrics
    lab = Lab(control_plane, namespace, admin)
    lab.services = {"victoria-metrics": (namespace, VM_SERVICE, VM_PORT)}
    lab.vm = server
    server.requests.clear()
    return lab


def metrics(
    lab: Lab, answer: str, status: int = 200, kube: Kube | None = None, **params: Any
) -> CheckResult:
    """The stand-in answers ``answer`` with ``status``; a metrics-query check asks it."""
    assert lab.vm is not None
    lab.vm.answer = (status, answer)
    spec = msgspec.convert(
        {"type": "metrics-query", "query": QUERY, "value": 0.95, **params},
        CHECK_TYPES["metrics-query"],
    )
    ctx = CheckContext(kube=kube or lab.kube, sampler=_no_sampler, services=lab.services)
    return run_check(spec, ctx)


def test_metrics_query_compares_the_value(vm: Lab) -> None:
    result = metrics(vm, _vector("0.99"))
    expect(result, Status.PASSED, "query value 0.99 is >= 0.95")
    # The query went through the API server's service proxy to the pod's port.
    path, query, _headers = vm.vm.requests[-1]
    assert path == "/api/v1/query"
    assert query == {"query": [QUERY]}
    low = metrics(vm, _vector("0.42"))
    expect(low, Status.FAILED, "query value 0.42 is not >= 0.95")


def test_metrics_query_scalar_result(vm: Lab) -> None:
    body = {"status": "success", "data": {"resultType": "scalar", "result": [1718031600, "1"]}}
    result = metrics(vm, json.dumps(body))
    expect(result, Status.PASSED, "query value 1 is >= 0.95")


def test_metrics_query_empty_result_is_pending_or_failed(vm: Lab) -> None:
    expect(metrics(vm, _vector()), Status.PENDING, "no data yet")
    failed = metrics(vm, _vector(), on_empty="failed")
    expect(failed, Status.FAILED, "no data yet")


def test_metrics_query_nan_is_no_data_never_compared(vm: Lab) -> None:
    result = metrics(vm, _vector("NaN"), compare="<", value=1)
    expect(result, Status.PENDING, "returned NaN", "0/0", "no requests in its time window")
    assert result.evidence["value"] == "NaN"
    failed = metrics(vm, _vector("NaN"), on_empty="failed")
    expect(failed, Status.FAILED, "returned NaN")


def test_metrics_query_infinity_is_reported(vm: Lab) -> None:
    result = metrics(vm, _vector("+Inf"))
    expect(result, Status.PENDING, "returned +Inf", "division by zero")
    failed = metrics(vm, _vector("-Inf"), compare="<", on_empty="failed")
    expect(failed, Status.FAILED, "returned -Inf")
    assert failed.evidence["value"] == "-Inf"


def test_metrics_query_rejected_query_is_an_error(vm: Lab) -> None:
    body = {"status": "error", "errorType": "422", "error": 'cannot parse "sum(": unexpected end'}
    # The real service proxy passes VictoriaMetrics' own 422 and body through; that body
    # (not a Kubernetes Status) is what the check reads, so it says what is wrong.
    result = metrics(vm, json.dumps(body), status=422)
    expect(
        result,
        Status.ERROR,
        "VictoriaMetrics rejected the query",
        'cannot parse "sum(": unexpected end',
    )
    answered = metrics(vm, json.dumps(body))
    expect(answered, Status.ERROR, "VictoriaMetrics rejected the query", "cannot parse")


def test_metrics_query_without_a_ready_victoria_metrics_cannot_check(
    vm: Lab, control_plane: Any
) -> None:
    """A Service with no ready pod: the real API server answers 503 (no endpoints), which
    kubelab retries until its deadline, then reports as "could not check"."""
    vm.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "vm-down", "namespace": vm.ns},
            "spec": {"selector": {"app": "vm-down"}, "ports": [{"port": VM_PORT}]},
        }
    )
    vm.services = {"victoria-metrics": (vm.ns, "vm-down", VM_PORT)}
    impatient = control_plane.kube(retry=RetryPolicy(deadline=3.0, initial_delay=0.05))
    result = metrics(vm, _vector("1"), kube=impatient)
    expect(result, Status.ERROR, "503 Service Unavailable", f"service {vm.ns}/vm-down")
    assert vm.vm.requests == []


def test_metrics_query_needs_the_right_to_proxy_to_the_service(vm: Lab) -> None:
    """``services/proxy`` in VictoriaMetrics' namespace: without it the real server
    answers 403, which the check reports as "could not check"."""
    nobody = _as(vm, f"nobody-{vm.ns}")
    result = metrics(vm, _vector("1"), kube=nobody)
    expect(
        result,
        Status.ERROR,
        f"the cluster refused to show service {vm.ns}/{VM_SERVICE} (403 Forbidden)",
    )
    assert vm.vm.requests == []
    user = f"metrics-reader-{vm.ns}"
    _grant(
        vm,
        user,
        [
            {
                "apiGroups": [""],
                "resources": ["services/proxy"],
                "resourceNames": [VM_SERVICE, f"{VM_SERVICE}:{VM_PORT}"],
                "verbs": ["get"],
            }
        ],
    )
    allowed = metrics(vm, _vector("0.99"), kube=_as(vm, user))
    expect(allowed, Status.PASSED, "query value 0.99 is >= 0.95")
