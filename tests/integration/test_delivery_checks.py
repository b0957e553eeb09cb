"""The progressive-delivery checks (Flagger, Argo Rollouts) and ``metrics-query`` through
the real ``Kube`` client against the emulated Kubernetes API.

The objects are recorded states under ``tests/fixtures/delivery/`` (shapes as Flagger v1.44
and Argo Rollouts v1.8 write them), loaded into the sandbox store the way the API server
keeps them: status written through the status subresource where the kind has one. One
sandbox API (HTTPS on 127.0.0.1, its own event loop thread) serves the whole module; each
test loads its fixtures and its namespaces are deleted afterwards. VictoriaMetrics is a
middleware of the test's own answering the API server's service-proxy path, so
``Kube.service_proxy_get`` runs for real.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from kubelab.checks.builtin import CheckContext
from kubelab.checks.result import CheckResult, Status
from kubelab.checks.runner import run_check
from kubelab.checks.types import CHECK_TYPES
from kubelab.cluster.kube import Kube
from kubelab.cluster.retry import RetryPolicy
from kubelab.sandbox import resources
from kubelab.sandbox.threaded import TOKEN, ThreadedApi

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "delivery"
VM = ("monitoring", "victoria-metrics-server", 8428)
V1_HASH, V2_HASH = "7c9d5f8b6", "5f6b8d9c74"
APP_IMAGE = "gitea.kubelab.local/course/app-backend"

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PROXY = re.compile(r"/api/v1/namespaces/([^/]+)/services/([^/]+)/proxy/(.*)")


class DeliveryApi(ThreadedApi):
    """The sandbox API on its own loop thread, with a stub VictoriaMetrics behind the
    service proxy: ``vm_answer`` is the (HTTP status, body) it gives."""

    def __init__(self, home: Path) -> None:
        self.vm_answer: tuple[int, str] = (200, "{}")
        self.proxied: list[tuple[str, str, str, dict[str, str]]] = []

        @web.middleware
        async def victoria_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
            match = _PROXY.fullmatch(request.path)
            if not match:
                return await handler(request)
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return web.json_response({"kind": "Status", "code": 401}, status=401)
            namespace, service, path = match.groups()
            self.proxied.append((namespace, service, path, dict(request.query)))
            status, body = self.vm_answer
            return web.Response(status=status, text=body, content_type="application/json")

        super().__init__(home, middlewares=[victoria_metrics])


class Cluster:
    """Loads recorded objects into the store; forgets them (their namespaces) afterwards."""

    def __init__(self, api: DeliveryApi, kube: Kube) -> None:
        self.api = api
        self.kube = kube
        self.namespaces: list[str] = []
        self.uids: dict[tuple[str, str, str], str] = {}

    def load(self, *names: str) -> None:
        for name in names:
            for doc in yaml.safe_load_all((FIXTURES / f"{name}.yaml").read_text()):
                self.create(doc)

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Create ``doc`` as a client would, then write its status as its controller would.

        The store gives every object generation 1; a recorded status that had observed
        the recorded generation is made to observe the stored one. Owner references are
        pointed at the uids the owners got here."""
        rt = resources.by_kind(doc["apiVersion"], doc["kind"])
        meta = doc["metadata"]
        namespace = meta.get("namespace")
        if rt is resources.NAMESPACES:
            if self.api.call(self.api.store.exists, rt, None, meta["name"]):
                return dict(doc)
            self.namespaces.append(meta["name"])
        for ref in meta.get("ownerReferences") or []:
            uid = self.uids.get((ref["kind"], ref["name"], namespace or ""))
            if uid:
                ref["uid"] = uid
        status = doc.pop("status", None) if "status" in rt.subresources else None
        created: dict[str, Any] = self.api.call(self.api.store.create, rt, doc)
        self.uids[(doc["kind"], meta["name"], namespace or "")] = created["metadata"]["uid"]
        if status is not None:
            recorded = str(meta.get("generation", ""))
            if recorded and status.get("observedGeneration") == recorded:
                status["observedGeneration"] = str(created["metadata"]["generation"])
            created = self.api.call(
                self.api.store.update_status, rt, namespace, meta["name"], status
            )
        return created

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Any) -> None:
        rt = resources.by_kind(api_version, kind)
        self.api.call(self.api.store.patch, rt, namespace, name, "merge", patch)

    def set_status(self, api_version: str, kind: str, namespace: str, name: str, **fields: Any):
        rt = resources.by_kind(api_version, kind)
        obj = self.api.call(self.api.store.get, rt, namespace, name)
        status = {**(obj.get("status") or {}), **fields}
        status = {k: v for k, v in status.items() if v is not None}
        self.api.call(self.api.store.update_status, rt, namespace, name, status)

    def fixture_docs(self, name: str) -> list[dict[str, Any]]:
        return list(yaml.safe_load_all((FIXTURES / f"{name}.yaml").read_text()))

    def cleanup(self) -> None:
        for namespace in self.namespaces:
            self.api.call(self.api.store.delete, resources.NAMESPACES, None, namespace)

    def check(self, **params: Any) -> CheckResult:
        """Validate ``params`` as a lesson's check and run it as ``kubelab check`` does."""
        spec = CHECK_TYPES[params["type"]].model_validate(params)
        ctx = CheckContext(kube=self.kube, sampler=_no_sampler, services={"victoria-metrics": VM})
        return run_check(spec, ctx)


def _no_sampler(spec: Any) -> Any:
    raise AssertionError("these checks send no traffic")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeliveryApi]:
    box = DeliveryApi(tmp_path_factory.mktemp("delivery-api"))
    try:
        yield box
    finally:
        box.close()


@pytest.fixture(scope="module")
def kube(api: DeliveryApi) -> Kube:
    return Kube(
        api.kubeconfig,
        timeout=5,
        retry=RetryPolicy(deadline=10, initial_delay=0.01, max_delay=0.05),
        poll=0,
    )


@pytest.fixture
def cluster(api: DeliveryApi, kube: Kube) -> Iterator[Cluster]:
    c = Cluster(api, kube)
    try:
        yield c
    finally:
        c.cleanup()


def expect(result: CheckResult, status: Status, *facts: str) -> None:
    """The result has ``status`` and its message names every fact."""
    assert result.status is status, result
    for fact in facts:
        assert fact in result.message, f"{fact!r} not in {result.message!r}"


# -- flagger-canary ----------------------------------------------------------------------------

CANARY = {"type": "flagger-canary", "name": "app-backend", "namespace": "canary-lab"}


def test_canary_still_analysing_is_pending_with_its_weight(cluster: Cluster) -> None:
    cluster.load("flagger-progressing")
    result = cluster.check(**CANARY, phase=["Succeeded"], primary_tag="v2")
    expect(result, Status.PENDING, "Canary canary-lab/app-backend", "Progressing")
    expect(result, Status.PENDING, "canary weight 20%", "0 failed checks", "Succeeded")
    assert "kubectl describe canary app-backend -n canary-lab" in (result.hint or "")
    assert result.evidence["canary_weight"] == 20
    assert result.evidence["max_event_weight"] == 20


def test_canary_weight_events_are_only_this_canarys(cluster: Cluster) -> None:
    # app-frontend's "canary weight 50" event sits in the same namespace.
    cluster.load("flagger-progressing")
    reached = cluster.check(**CANARY, phase=["Progressing"], reached_weight=20)
    expect(reached, Status.PASSED, "Progressing", "canary weight reached 20%")
    not_yet = cluster.check(**CANARY, phase=["Progressing"], reached_weight=50)
    expect(not_yet, Status.PENDING, "weight got to 20% at most", "at least 50%")


def test_canary_promoted_passes_with_primary_tag_weight_and_events(cluster: Cluster) -> None:
    cluster.load("flagger-succeeded")
    result = cluster.check(
        **CANARY,
        phase=["Succeeded"],
        primary_tag="v2",
        reached_weight=50,
        events=["Promotion completed", "copying app-backend.canary-lab template spec"],
    )
    expect(result, Status.PASSED, "Succeeded", "reached 50%", f"the primary runs {APP_IMAGE}:v2")
    assert result.evidence["primary_image"] == f"{APP_IMAGE}:v2"


def test_promotion_proves_max_weight_when_events_were_merged(cluster: Cluster) -> None:
    # client-go merges an object's 11th distinct message within 10 minutes into one
    # "(combined from similar events)" event that each later message overwrites: the
    # "canary weight 30/40/50" events are gone, the merged one shows the last message.
    cluster.load("flagger-succeeded")
    rt = resources.by_kind("v1", "Event")
    merged = False
    for event in cluster.api.call(cluster.api.store.list, rt, "canary-lab")[0]:
        text = event["message"]
        if any(f"canary weight {w}" in text for w in (30, 40, 50)) or "Copying" in text:
            if not merged:
                event["message"] = (
                    "(combined from similar events): Promotion completed! Scaling down "
                    "app-backend.canary-lab"
                )
                event["count"] = 6
                event["lastTimestamp"] = "2025-06-10T14:04:30Z"
                cluster.api.call(cluster.api.store.replace, rt, event)
                merged = True
            else:
                name = event["metadata"]["name"]
                cluster.api.call(cluster.api.store.delete, rt, "canary-lab", name)
        elif text.startswith("Promotion completed") or text.startswith("Routing all"):
            cluster.api.call(cluster.api.store.delete, rt, "canary-lab", event["metadata"]["name"])
    result = cluster.check(
        **CANARY, phase=["Succeeded"], reached_weight=50, events=["Promotion completed"]
    )
    expect(result, Status.PASSED, "reached 50% (Flagger promotes at maxWeight)")
    assert result.evidence["max_event_weight"] == 20
    assert result.evidence["reached_weight_source"] == "promoted at maxWeight"


def test_canary_promoted_with_the_wrong_primary_image_fails(cluster: Cluster) -> None:
    cluster.load("flagger-succeeded")
    result = cluster.check(**CANARY, phase=["Succeeded"], primary_tag="v3", reached_weight=60)
    expect(
        result,
        Status.FAILED,
        "is Succeeded, but the primary Deployment app-backend-primary runs "
        f"{APP_IMAGE}:v2, expected tag v3",
        "got to 50% at most in its latest analysis, expected at least 60%",
    )


def test_canary_promoted_when_the_exercise_wants_a_rollback_fails_with_the_way_out(
    cluster: Cluster,
) -> None:
    cluster.load("flagger-succeeded")
    result = cluster.check(**CANARY, phase=["Failed"])
    expect(result, Status.FAILED, "was promoted (Succeeded)", "wants the analysis to fail")
    expect(result, Status.FAILED, "/status/500")


def test_canary_rolled_back_passes_when_failure_is_wanted(cluster: Cluster) -> None:
    cluster.load("flagger-failed")
    result = cluster.check(
        **CANARY, phase=["Failed"], primary_tag="v1", events=["Rolling back", "Canary failed!"]
    )
    expect(result, Status.PASSED, "Failed", "failed checks", "reached 20%", "app-backend:v1")
    assert result.evidence["failed_checks"] == 5


def test_canary_rolled_back_when_promotion_is_wanted_says_why(cluster: Cluster) -> None:
    cluster.load("flagger-failed")
    result = cluster.check(**CANARY, phase=["Succeeded"])
    expect(
        result,
        Status.FAILED,
        "Failed: Flagger rolled back the canary",
        "Rolling back app-backend.canary-lab failed checks threshold reached 5",
        "advancement success rate 38.08% < 99%",
        "start a new revision",
    )


def test_canary_missing_event_is_named(cluster: Cluster) -> None:
    cluster.load("flagger-failed")
    result = cluster.check(**CANARY, phase=["Failed"], events=["request duration"])
    expect(
        result,
        Status.FAILED,
        "no event of the canary's latest analysis mentions 'request duration'",
        "Canary failed! Scaling down app-backend.canary-lab",
    )


def test_only_the_latest_analysis_counts(cluster: Cluster) -> None:
    # Promoted at 50% before; the next revision is halted at 20% and rolled back. The
    # repeated messages ("New revision detected", "canary weight 10/20") are folded into one
    # event each by Kubernetes, their lastTimestamp moved to this run.
    cluster.load("flagger-succeeded")
    rt = resources.by_kind("v1", "Event")
    later = {
        "New revision detected! Scaling up app-backend.canary-lab": "2025-06-10T14:10:00Z",
        "Advance app-backend.canary-lab canary weight 10": "2025-06-10T14:10:30Z",
        "Advance app-backend.canary-lab canary weight 20": "2025-06-10T14:10:45Z",
    }
    for event in cluster.api.call(cluster.api.store.list, rt, "canary-lab")[0]:
        if event["message"] in later:
            event["lastTimestamp"] = later[event["message"]]
            event["count"] = 2
            cluster.api.call(cluster.api.store.replace, rt, event)
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "app-backend.1847a2b9c0d3f900", "namespace": "canary-lab"},
            "involvedObject": {"kind": "Canary", "name": "app-backend", "namespace": "canary-lab"},
            "reason": "Synced",
            "message": "Rolling back app-backend.canary-lab failed checks threshold reached 5",
            "type": "Warning",
            "lastTimestamp": "2025-06-10T14:12:00Z",
        }
    )
    cluster.set_status("flagger.app/v1beta1", "Canary", "canary-lab", "app-backend", phase="Failed")
    result = cluster.check(
        **CANARY, phase=["Failed"], reached_weight=50, events=["Promotion completed"]
    )
    expect(
        result,
        Status.FAILED,
        "got to 20% at most in its latest analysis, expected at least 50%",
        "no event of the canary's latest analysis mentions 'Promotion completed'",
    )
    assert result.evidence["max_event_weight"] == 20


def test_canary_that_does_not_exist_fails(cluster: Cluster) -> None:
    cluster.load("flagger-progressing")
    result = cluster.check(**{**CANARY, "name": "app-frontend"}, phase=["Succeeded"])
    expect(result, Status.FAILED, "Canary canary-lab/app-frontend does not exist")
    assert "kubectl get canaries -n canary-lab" in (result.hint or "")


def test_new_revision_not_picked_up_yet_is_pending_not_a_stale_pass(cluster: Cluster) -> None:
    cluster.load("flagger-succeeded")
    # The student's next change: Flagger still shows the previous run's Succeeded.
    cluster.patch(
        "apps/v1",
        "Deployment",
        "canary-lab",
        "app-backend",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": f"{APP_IMAGE}:v3"}]}}
            }
        },
    )
    result = cluster.check(**CANARY, phase=["Failed"])
    expect(
        result,
        Status.PENDING,
        "still Succeeded from the previous revision",
        f"{APP_IMAGE}:v3",
        f"the primary runs {APP_IMAGE}:v2",
    )


def test_canary_without_status_is_pending(cluster: Cluster) -> None:
    docs = cluster.fixture_docs("flagger-progressing")
    for doc in docs:
        if doc["kind"] == "Canary":
            doc.pop("status")
        if doc["kind"] in ("Namespace", "Canary"):
            cluster.create(doc)
    result = cluster.check(**CANARY, phase=["Succeeded"])
    expect(result, Status.PENDING, "no status yet", "Flagger")


# -- rollout-status ----------------------------------------------------------------------------

ROLLOUT = {"type": "rollout-status", "name": "app-backend", "namespace": "rollouts-lab"}


def test_bluegreen_paused_before_promotion_passes_as_paused(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-paused")
    result = cluster.check(**ROLLOUT, phase=["Paused"], paused=True, stable_tag="v1")
    expect(result, Status.PASSED, "Rollout rollouts-lab/app-backend is Paused", "BlueGreenPause")
    expect(result, Status.PASSED, f"stable {APP_IMAGE}:v1")
    assert result.evidence["paused"] is True


def test_bluegreen_paused_when_healthy_is_wanted_fails_with_the_promote_command(
    cluster: Cluster,
) -> None:
    cluster.load("rollout-bluegreen-paused")
    result = cluster.check(**ROLLOUT, phase=["Healthy"])
    expect(result, Status.FAILED, "Paused (BlueGreenPause)", "waits for a promotion", "Healthy")
    assert "kubectl argo rollouts promote app-backend -n rollouts-lab" in (result.hint or "")


def test_bluegreen_promoted_is_healthy_on_the_new_stable_image(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-healthy")
    result = cluster.check(**ROLLOUT, phase=["Healthy"], paused=False, stable_tag="v2")
    expect(result, Status.PASSED, "is Healthy", f"stable {APP_IMAGE}:v2")
    wrong = cluster.check(**ROLLOUT, phase=["Healthy"], stable_tag="v1")
    expect(
        wrong,
        Status.FAILED,
        f"the stable ReplicaSet app-backend-{V2_HASH} ({APP_IMAGE}:v2) runs tag v2, expected v1",
    )


def test_rollout_aborted_by_analysis_is_degraded_with_the_reason(cluster: Cluster) -> None:
    cluster.load("rollout-canary-degraded")
    result = cluster.check(**ROLLOUT, phase=["Healthy"])
    expect(
        result,
        Status.FAILED,
        "is Degraded: RolloutAborted: Rollout aborted update to revision 2",
        'Metric "success-rate" assessed Failed due to failed (1) > failureLimit (0)',
    )
    hint = result.hint or ""
    assert "kubectl get analysisrun -n rollouts-lab" in hint
    assert "kubectl argo rollouts retry rollout app-backend -n rollouts-lab" in hint
    assert result.evidence["abort"] is True and result.evidence["canary_weight"] == 0
    wanted = cluster.check(**ROLLOUT, phase=["Degraded"], step=0, canary_weight=0)
    expect(wanted, Status.PASSED, "Degraded", "at step 0 of 6", "canary weight 0%")


def test_rollout_progressing_is_pending_until_healthy(cluster: Cluster) -> None:
    cluster.load("rollout-canary-progressing")
    result = cluster.check(**ROLLOUT, phase=["Healthy"])
    expect(
        result,
        Status.PENDING,
        "Progressing (more replicas need to be updated) at step 2 of 6",
        "not Healthy yet",
    )


def test_rollout_step_and_weight_are_compared(cluster: Cluster) -> None:
    cluster.load("rollout-canary-progressing")
    result = cluster.check(**ROLLOUT, phase=["Progressing"], step=2, canary_weight=20)
    expect(result, Status.PASSED, "at step 2 of 6", "canary weight 20%")
    assert result.evidence["weight_source"] == "status.canary.weights"
    ahead = cluster.check(**ROLLOUT, phase=["Progressing", "Paused"], step=3, canary_weight=50)
    expect(
        ahead,
        Status.PENDING,
        "it is at step 2, expected step 3",
        "the canary weight is 20%, expected 50%",
    )


def test_rollout_weight_without_traffic_routing_comes_from_the_steps(cluster: Cluster) -> None:
    cluster.load("rollout-canary-progressing")
    cluster.set_status(
        "argoproj.io/v1alpha1",
        "Rollout",
        "rollouts-lab",
        "app-backend",
        canary={},
        currentStepIndex=4,
        phase="Paused",
        message="CanaryPauseStep",
        pauseConditions=[{"reason": "CanaryPauseStep", "startTime": "2025-06-10T16:04:00Z"}],
        controllerPause=True,
    )
    result = cluster.check(**ROLLOUT, phase=["Paused"], step=4, canary_weight=50, paused=True)
    expect(result, Status.PASSED, "Paused (CanaryPauseStep) at step 4 of 6", "weight 50%")
    assert result.evidence["weight_source"] == "steps"
    # Step 4 is `pause: {duration: 30s}`: it ends by itself, so Healthy is only pending.
    timed = cluster.check(**ROLLOUT, phase=["Healthy"])
    expect(timed, Status.PENDING, "a pause of 30s that ends by itself")


def test_rollout_spec_change_not_observed_yet_is_pending(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-healthy")
    cluster.patch(
        "argoproj.io/v1alpha1",
        "Rollout",
        "rollouts-lab",
        "app-backend",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:v3"}]}}}},
    )
    result = cluster.check(**ROLLOUT, phase=["Paused"])
    expect(result, Status.PENDING, "waiting for rollout spec update to be observed")
    healthy = cluster.check(**ROLLOUT, phase=["Healthy"])
    expect(healthy, Status.PENDING, "not Healthy yet")


def test_healthy_rollout_when_an_update_is_wanted_fails(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-healthy")
    result = cluster.check(**ROLLOUT, phase=["Paused"])
    expect(result, Status.FAILED, "is Healthy: no update is in progress", "set image")


def test_rollout_that_does_not_exist_fails(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-healthy")
    result = cluster.check(**{**ROLLOUT, "name": "app-frontend"}, phase=["Healthy"])
    expect(result, Status.FAILED, "Rollout rollouts-lab/app-frontend does not exist")


# -- rollout-services --------------------------------------------------------------------------

SERVICES = {"type": "rollout-services", "rollout": "app-backend", "namespace": "rollouts-lab"}


def test_bluegreen_before_promotion_active_is_v1_and_preview_is_v2(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-paused")
    result = cluster.check(
        **SERVICES, expect={"app-backend-active": "v1", "app-backend-preview": "v2"}
    )
    expect(
        result,
        Status.PASSED,
        f"app-backend-active -> app-backend-{V1_HASH} ({APP_IMAGE}:v1)",
        f"app-backend-preview -> app-backend-{V2_HASH} ({APP_IMAGE}:v2)",
    )
    assert result.evidence["selected"]["app-backend-preview"]["pod_hash"] == V2_HASH


def test_service_selecting_the_wrong_version_fails_with_what_it_selects(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-paused")
    result = cluster.check(
        **SERVICES, expect={"app-backend-active": "v2", "app-backend-preview": "v2"}
    )
    expect(
        result,
        Status.FAILED,
        f"Service app-backend-active selects ReplicaSet app-backend-{V1_HASH} "
        f"({APP_IMAGE}:v1), tag v1; expected tag v2",
        "; the Rollout is Paused (BlueGreenPause)",
    )
    assert "app-backend-preview" not in result.message


def test_service_not_managed_by_the_rollout_is_explained(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-paused")
    result = cluster.check(**SERVICES, expect={"app-backend": "v2", "app-backend-gone": "v2"})
    expect(
        result,
        Status.FAILED,
        "Service app-backend is not managed by Argo Rollouts",
        "activeService, previewService, canaryService or stableService",
        "activeService: app-backend-active, previewService: app-backend-preview",
        "Service app-backend-gone does not exist",
    )


def test_bluegreen_after_promotion_both_services_select_v2(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-healthy")
    result = cluster.check(
        **SERVICES, expect={"app-backend-active": "v2", "app-backend-preview": "v2"}
    )
    expect(result, Status.PASSED, f"app-backend-active -> app-backend-{V2_HASH}")


def test_canary_services_during_a_progressing_update(cluster: Cluster) -> None:
    cluster.load("rollout-canary-progressing")
    ok = cluster.check(**SERVICES, expect={"app-backend-canary": "v2", "app-backend-stable": "v1"})
    expect(ok, Status.PASSED, "app-backend-canary ->", "app-backend-stable ->")
    # Still moving: a mismatch now may be fixed by the controller in a moment.
    moving = cluster.check(**SERVICES, expect={"app-backend-stable": "v2"})
    expect(moving, Status.PENDING, "Progressing", "app-backend-stable selects")


# -- analysisrun-result ------------------------------------------------------------------------

RUN = {"type": "analysisrun-result", "rollout": "app-backend", "namespace": "rollouts-lab"}


def test_successful_prepromotion_analysis_passes_with_its_values(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-paused", "analysisrun-pre-successful")
    result = cluster.check(**RUN, template="success-rate")
    expect(
        result,
        Status.PASSED,
        f"AnalysisRun app-backend-{V2_HASH}-2-pre of AnalysisTemplate success-rate is Successful",
        "metric success-rate Successful, value [0.99]",
        "3 successful",
        "successCondition result[0] >= 0.95",
    )
    assert result.evidence["rollout_type"] == "PrePromotion"


def test_one_run_of_two_templates_is_judged_per_template(cluster: Cluster) -> None:
    cluster.load("rollout-bluegreen-paused", "analysisrun-pre-two-templates")
    templates = [{"templateName": "load-test"}, {"templateName": "success-rate"}]
    cluster.patch(
        "argoproj.io/v1alpha1",
        "Rollout",
        "rollouts-lab",
        "app-backend",
        {"spec": {"strategy": {"blueGreen": {"prePromotionAnalysis": {"templates": templates}}}}},
    )
    load_test = cluster.check(**RUN, template="load-test")
    expect(
        load_test,
        Status.PASSED,
        f"AnalysisRun app-backend-{V2_HASH}-2-pre is Failed",
        "its metrics from AnalysisTemplate load-test (load-test) are Successful",
        "metric load-test Successful (1 measurement: 1 successful)",
    )
    success_rate = cluster.check(**RUN, template="success-rate")
    expect(
        success_rate,
        Status.FAILED,
        "its metrics from AnalysisTemplate success-rate (success-rate) are Failed",
        "metric success-rate Failed, value [0.42]",
        "expected Successful: a metric missed its successCondition",
    )
    assert success_rate.evidence["run_phase"] == "Failed"


def test_failed_analysis_shows_the_value_against_the_condition(cluster: Cluster) -> None:
    cluster.load("rollout-canary-degraded", "analysisrun-step-failed")
    result = cluster.check(**RUN, template="success-rate", expect="Successful")
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
    wanted = cluster.check(**RUN, expect="Failed")
    expect(wanted, Status.PASSED, "is Failed", "[0.42]")


def test_empty_query_result_error_is_explained(cluster: Cluster) -> None:
    cluster.load("rollout-canary-degraded", "analysisrun-step-error")
    result = cluster.check(**RUN, template="success-rate")
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
    as_error = cluster.check(**RUN, expect="Error")
    expect(as_error, Status.PASSED, "is Error", "the query returned no data")
    as_failed = cluster.check(**RUN, expect="Failed")
    expect(as_failed, Status.FAILED, "an Error is not a Failed", "the query returned no data")


def test_running_analysis_is_pending(cluster: Cluster) -> None:
    cluster.load("rollout-canary-progressing", "analysisrun-step-running")
    result = cluster.check(**RUN, template="success-rate", expect="Successful")
    expect(result, Status.PENDING, "is Running", "value [0.97]", "1 measurement: 1 successful")


def test_no_analysisrun_yet_is_pending(cluster: Cluster) -> None:
    cluster.load("rollout-canary-progressing")
    result = cluster.check(**RUN, template="success-rate")
    expect(
        result,
        Status.PENDING,
        "no AnalysisRun of AnalysisTemplate success-rate of Rollout rollouts-lab/app-backend yet",
        "has not reached its analysis step (step 2)",
    )


def test_runs_of_other_origins_and_templates_are_told_apart(cluster: Cluster) -> None:
    # A pre-promotion run of the blue/green strategy is no run of the canary's step 2.
    cluster.load("rollout-canary-progressing", "analysisrun-pre-successful")
    result = cluster.check(**RUN, template="success-rate")
    expect(result, Status.PENDING, "no AnalysisRun of AnalysisTemplate success-rate")
    unused = cluster.check(**RUN, template="latency")
    expect(
        unused,
        Status.FAILED,
        "does not use AnalysisTemplate latency (and it does not exist); it uses success-rate",
    )


def test_the_latest_run_counts(cluster: Cluster) -> None:
    cluster.load("rollout-canary-degraded", "analysisrun-step-failed")
    # Revision 1's run of the same step, created in the same second (creationTimestamp has
    # second precision): the revision annotation orders them.
    (older,) = cluster.fixture_docs("analysisrun-step-failed")
    older["metadata"]["name"] = f"app-backend-{V1_HASH}-1-2"
    older["metadata"]["annotations"]["rollout.argoproj.io/revision"] = "1"
    older["status"]["phase"] = "Successful"
    cluster.create(older)
    result = cluster.check(**RUN)
    expect(result, Status.FAILED, f"AnalysisRun app-backend-{V2_HASH}-2-2 is Failed")


def test_analysisrun_of_a_missing_rollout_fails(cluster: Cluster) -> None:
    cluster.load("rollout-canary-progressing")
    result = cluster.check(**{**RUN, "rollout": "app-frontend"})
    expect(result, Status.FAILED, "Rollout rollouts-lab/app-frontend does not exist")


# -- metrics-query -----------------------------------------------------------------------------

QUERY = (
    'sum(rate(istio_requests_total{response_code!~"5.*"}[1m])) '
    "/ sum(rate(istio_requests_total[1m]))"
)


def _vector(*values: str) -> str:
    result = [{"metric": {}, "value": [1718031600.123, v]} for v in values]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


def metrics(cluster: Cluster, api: DeliveryApi, answer: str, status: int = 200, **params: Any):
    api.vm_answer = (status, answer)
    params = {"type": "metrics-query", "query": QUERY, "value": 0.95, **params}
    return cluster.check(**params)


def test_metrics_query_compares_the_value(cluster: Cluster, api: DeliveryApi) -> None:
    result = metrics(cluster, api, _vector("0.99"))
    expect(result, Status.PASSED, "query value 0.99 is >= 0.95")
    namespace, service, path, query = api.proxied[-1]
    assert (namespace, service, path) == (
        "monitoring",
        "victoria-metrics-server:8428",
        "api/v1/query",
    )
    assert query == {"query": QUERY}
    low = metrics(cluster, api, _vector("0.42"))
    expect(low, Status.FAILED, "query value 0.42 is not >= 0.95")


def test_metrics_query_scalar_result(cluster: Cluster, api: DeliveryApi) -> None:
    body = {"status": "success", "data": {"resultType": "scalar", "result": [1718031600, "1"]}}
    result = metrics(cluster, api, json.dumps(body))
    expect(result, Status.PASSED, "query value 1 is >= 0.95")


def test_metrics_query_empty_result_is_pending_or_failed(cluster: Cluster, api: DeliveryApi):
    expect(metrics(cluster, api, _vector()), Status.PENDING, "no data yet")
    failed = metrics(cluster, api, _vector(), on_empty="failed")
    expect(failed, Status.FAILED, "no data yet")


def test_metrics_query_nan_is_no_data_never_compared(cluster: Cluster, api: DeliveryApi) -> None:
    result = metrics(cluster, api, _vector("NaN"), compare="<", value=1)
    expect(result, Status.PENDING, "returned NaN", "0/0", "no requests in its time window")
    assert result.evidence["value"] == "NaN"
    failed = metrics(cluster, api, _vector("NaN"), on_empty="failed")
    expect(failed, Status.FAILED, "returned NaN")


def test_metrics_query_infinity_is_reported(cluster: Cluster, api: DeliveryApi) -> None:
    result = metrics(cluster, api, _vector("+Inf"))
    expect(result, Status.PENDING, "returned +Inf", "division by zero")
    failed = metrics(cluster, api, _vector("-Inf"), compare="<", on_empty="failed")
    expect(failed, Status.FAILED, "returned -Inf")
    assert failed.evidence["value"] == "-Inf"


def test_metrics_query_rejected_query_is_an_error(cluster: Cluster, api: DeliveryApi) -> None:
    body = {"status": "error", "errorType": "422", "error": 'cannot parse "sum(": unexpected end'}
    result = metrics(cluster, api, json.dumps(body), status=422)
    expect(result, Status.ERROR, "422", 'cannot parse "sum(": unexpected end')
    answered = metrics(cluster, api, json.dumps(body))
    expect(answered, Status.ERROR, "VictoriaMetrics rejected the query", "cannot parse")
