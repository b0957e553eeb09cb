"""Kube's pure parts: labels, the no-op test, apply order, rollout status and waits
(fake status progressions, poll 0, fake clock)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from support import FakeTime

from kubelab.cluster import kube as kube_mod
from kubelab.cluster.kube import (
    APPLIED_HASH_ANNOTATION,
    Kube,
    applied_fingerprint,
    contains,
    kubelab_labels,
    lesson_selector,
    stamp_labels,
    with_fingerprint,
)
from kubelab.errors import ExitCode, KubelabError, KubelabTimeout
from kubelab.k8s.workloads import Pending, apply_order, rollout_status
from kubelab.retry import RetryPolicy


def fake_kube(t: FakeTime, poll: float = 0.0) -> Kube:
    return Kube(None, retry=RetryPolicy(sleep=t.sleep, clock=t.clock), poll=poll)


# -- labels and fingerprints ------------------------------------------------------------------


def test_stamp_labels_adds_kubelab_labels_and_keeps_the_objects_own() -> None:
    obj = {"kind": "Service", "metadata": {"name": "a", "labels": {"app": "a", "version": "v1"}}}
    out = stamp_labels(obj, kubelab_labels("lesson-1"))
    assert out["metadata"]["labels"] == {
        "app": "a",
        "version": "v1",
        "app.kubernetes.io/managed-by": "kubelab",
        "kubelab.dev/lesson": "lesson-1",
    }
    assert obj["metadata"]["labels"] == {"app": "a", "version": "v1"}  # input untouched
    assert stamp_labels({"kind": "X"}, {"a": "b"})["metadata"]["labels"] == {"a": "b"}
    assert lesson_selector("l") == "app.kubernetes.io/managed-by=kubelab,kubelab.dev/lesson=l"


def test_fingerprint_ignores_key_order_and_itself_and_changes_with_content() -> None:
    a = {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}}
    b = {"data": {"b": "2", "a": "1"}, "metadata": {"name": "x"}, "kind": "ConfigMap"}
    assert applied_fingerprint(a) == applied_fingerprint(b)
    stamped = with_fingerprint(a)
    assert stamped["metadata"]["annotations"] == {APPLIED_HASH_ANNOTATION: applied_fingerprint(a)}
    assert applied_fingerprint(stamped) == applied_fingerprint(a)
    assert with_fingerprint(stamped) == stamped
    removed = {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}}
    assert applied_fingerprint(removed) != applied_fingerprint(a)


# -- the no-op test ---------------------------------------------------------------------------

LIVE_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "web",
        "namespace": "istio",
        "uid": "u-1",
        "resourceVersion": "42",
        "generation": 1,
        "labels": {"app": "web", "extra": "from-someone-else"},
        "managedFields": [{"manager": "kubelab"}],
    },
    "spec": {
        "replicas": 1,
        "progressDeadlineSeconds": 600,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "web:v1",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "resources": {},
                        "imagePullPolicy": "IfNotPresent",
                    }
                ],
                "restartPolicy": "Always",
            },
        },
    },
    "status": {"replicas": 1},
}


def desired(**changes: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": "web:v1",
        "ports": [{"containerPort": 8080}],
        "resources": {},
    }
    container.update(changes)
    return {
        "metadata": {"name": "web", "namespace": "istio", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container]},
            },
        },
    }


def test_live_object_with_defaults_contains_the_applied_one() -> None:
    assert contains(LIVE_DEPLOYMENT, desired())


@pytest.mark.parametrize(
    "change",
    [
        {"image": "web:v2"},
        {"ports": [{"containerPort": 8080}, {"containerPort": 9090}]},  # a list that grew
        {"ports": [{"containerPort": 9090}]},  # ...or changed
        {"env": [{"name": "A", "value": "1"}]},  # a field the live object lacks
        {"imagePullPolicy": None},  # null: unset a field it has
        {"ports": [{"containerPort": "8080"}]},  # "8080" is not 8080 to the API
    ],
)
def test_any_difference_means_apply(change: dict[str, Any]) -> None:
    assert not contains(LIVE_DEPLOYMENT, desired(**change))


def test_items_another_manager_added_to_a_list_are_not_a_difference() -> None:
    """Istio's injector appends its sidecar to a Pod: the Pod kubelab applied is unchanged."""
    live = {"spec": {"containers": [{"name": "curl-test"}, {"name": "istio-proxy"}]}}
    assert contains(live, {"spec": {"containers": [{"name": "curl-test"}]}})
    assert not contains(
        live, {"spec": {"containers": [{"name": "istio-proxy"}, {"name": "curl-test"}]}}
    )
    assert not contains(live, {"spec": {"containers": [{"name": "other"}]}})
    assert not contains({"spec": {"containers": []}}, {"spec": {"containers": [{"name": "a"}]}})


def test_scalar_rules() -> None:
    assert contains({"a": 1.0}, {"a": 1})
    assert not contains({"a": 1}, {"a": True})
    assert not contains({"a": True}, {"a": 1})
    assert contains({"a": None}, {"a": None}) and contains({}, {"a": None})
    assert contains({}, {"a": {}, "b": []})  # the server dropped empty fields
    assert not contains({}, {"a": {"b": 1}})
    assert not contains({"a": "x"}, {"a": {"b": 1}})


def test_secret_string_data_is_compared_as_the_data_the_server_stores() -> None:
    live = {
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"pw": base64.b64encode(b"hunter2").decode()},
    }
    applied = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "stringData": {"pw": "hunter2"},
    }
    assert contains(live, kube_mod._comparable(applied))
    applied["stringData"] = {"pw": "changed"}
    assert not contains(live, kube_mod._comparable(applied))


# -- apply order ------------------------------------------------------------------------------


def test_apply_order_namespaces_then_crds_then_builtins_then_custom_resources() -> None:
    objs = [
        {"kind": "VirtualService", "metadata": {"name": "vs"}},
        {"kind": "Deployment", "metadata": {"name": "d1"}},
        {"kind": "CustomResourceDefinition", "metadata": {"name": "crd"}},
        {"kind": "Service", "metadata": {"name": "svc"}},
        {"kind": "Deployment", "metadata": {"name": "d0"}},
        {"kind": "Namespace", "metadata": {"name": "ns"}},
        {"kind": "ConfigMap", "metadata": {"name": "cm"}},
    ]
    assert [o["metadata"]["name"] for o in apply_order(objs)] == [
        "ns",
        "crd",
        "cm",
        "svc",
        "d1",  # the given order is kept within a kind
        "d0",
        "vs",
    ]


def test_apply_all_waits_for_crds_before_custom_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        Kube,
        "apply",
        lambda self, obj, labels=None: calls.append(f"apply {obj['kind']}") or dict(obj),
    )
    monkeypatch.setattr(
        Kube,
        "wait_condition",
        lambda self, api, kind, name, ns, cond, timeout: calls.append(f"wait {name} {cond}") or {},
    )
    kube = Kube(None)
    kube.apply_all(
        [
            {"kind": "Canary", "metadata": {"name": "c"}},
            {"kind": "CustomResourceDefinition", "metadata": {"name": "canaries.flagger.app"}},
            {"kind": "Namespace", "metadata": {"name": "ns"}},
            {"kind": "Deployment", "metadata": {"name": "d"}},
        ]
    )
    assert calls == [
        "apply Namespace",
        "apply CustomResourceDefinition",
        "apply Deployment",
        "wait canaries.flagger.app Established",
        "apply Canary",
    ]


# -- rollout status ---------------------------------------------------------------------------


def deployment(spec_replicas: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "app-backend-v2", "namespace": "istio", "generation": 2},
        "spec": {"replicas": spec_replicas},
        "status": status,
    }


def reason(kind: str, obj: dict[str, Any] | None) -> str:
    pending = rollout_status(kind, obj)
    assert pending is not None, "expected a rollout still in progress"
    return pending.reason


DEPLOYMENT_PROGRESSION = [
    (None, "it does not exist yet"),
    (deployment(observedGeneration=1), "waiting for the deployment spec update to be observed"),
    (deployment(observedGeneration=2, replicas=2, updatedReplicas=1), "1 out of 2 new replicas"),
    (
        deployment(observedGeneration=2, updatedReplicas=2, replicas=3),
        "1 old replicas are pending termination",
    ),
    (
        deployment(observedGeneration=2, updatedReplicas=2, availableReplicas=1, replicas=2),
        "1 of 2 updated replicas are available",
    ),
]
DONE = deployment(observedGeneration=2, updatedReplicas=2, availableReplicas=2, replicas=2)


@pytest.mark.parametrize(("obj", "reason"), DEPLOYMENT_PROGRESSION)
def test_deployment_rollout_status(obj: dict[str, Any] | None, reason: str) -> None:
    pending = rollout_status("Deployment", obj)
    assert isinstance(pending, Pending) and not pending
    assert reason in pending.reason


def test_deployment_done_and_deadline_exceeded() -> None:
    assert rollout_status("Deployment", DONE) is None
    stuck = deployment(
        observedGeneration=2,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    with pytest.raises(KubelabError, match="app-backend-v2 exceeded its progress deadline"):
        rollout_status("Deployment", stuck)


def statefulset(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "db", "generation": 1},
        "spec": {"replicas": 2, "updateStrategy": {"type": "RollingUpdate"}},
        "status": {"observedGeneration": 1, **status},
    }


def test_statefulset_rollout_status() -> None:
    assert "spec update" in reason("StatefulSet", statefulset(observedGeneration=0))
    assert "1 of 2 pods are ready" in reason("StatefulSet", statefulset(readyReplicas=1))
    rolling = statefulset(
        readyReplicas=2, currentRevision="db-1", updateRevision="db-2", updatedReplicas=1
    )
    assert "revision db-2" in reason("StatefulSet", rolling)
    assert (
        rollout_status(
            "StatefulSet", statefulset(readyReplicas=2, currentRevision="r", updateRevision="r")
        )
        is None
    )
    partitioned = statefulset(readyReplicas=2, updatedReplicas=0)
    partitioned["spec"]["updateStrategy"]["rollingUpdate"] = {"partition": 1}
    assert "partitioned" in reason("StatefulSet", partitioned)
    on_delete = statefulset()
    on_delete["spec"]["updateStrategy"] = {"type": "OnDelete"}
    with pytest.raises(KubelabError, match="RollingUpdate"):
        rollout_status("StatefulSet", on_delete)


def test_daemonset_rollout_status() -> None:
    def ds(**status: Any) -> dict[str, Any]:
        return {"metadata": {"name": "agent", "generation": 3}, "spec": {}, "status": status}

    assert "spec update" in reason("DaemonSet", ds(observedGeneration=2))
    scheduling = ds(observedGeneration=3, desiredNumberScheduled=3, updatedNumberScheduled=1)
    assert "1 out of 3 new pods" in reason("DaemonSet", scheduling)
    starting = ds(
        observedGeneration=3, desiredNumberScheduled=3, updatedNumberScheduled=3, numberAvailable=2
    )
    assert "2 of 3 updated pods" in reason("DaemonSet", starting)
    done = ds(
        observedGeneration=3, desiredNumberScheduled=3, updatedNumberScheduled=3, numberAvailable=3
    )
    assert rollout_status("DaemonSet", done) is None
    with pytest.raises(KubelabError, match="not a workload"):
        rollout_status("Service", {})


# -- waits ------------------------------------------------------------------------------------


def feed(
    monkeypatch: pytest.MonkeyPatch, objects: list[dict[str, Any] | None]
) -> list[tuple[Any, ...]]:
    """Make Kube.get return ``objects`` one per call (the last one repeats)."""
    seen: list[tuple[Any, ...]] = []
    stream: Iterator[dict[str, Any] | None] = iter(objects)
    last: list[dict[str, Any] | None] = [None]

    def get(
        self: Kube, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> Any:
        seen.append((api_version, kind, name, namespace))
        last[0] = next(stream, last[0])
        return last[0]

    monkeypatch.setattr(Kube, "get", get)
    return seen


def test_wait_rollout_follows_a_progression_with_poll_0(monkeypatch: pytest.MonkeyPatch) -> None:
    t = FakeTime()
    seen = feed(monkeypatch, [obj for obj, _ in DEPLOYMENT_PROGRESSION] + [DONE])
    result = fake_kube(t).wait_rollout("Deployment", "app-backend-v2", "istio", timeout=180)
    assert result is DONE
    assert len(seen) == len(DEPLOYMENT_PROGRESSION) + 1
    assert seen[0] == ("apps/v1", "Deployment", "app-backend-v2", "istio")
    assert t.sleeps == [0.0] * len(DEPLOYMENT_PROGRESSION)


def test_wait_rollout_timeout_message(monkeypatch: pytest.MonkeyPatch) -> None:
    t = FakeTime()
    feed(
        monkeypatch,
        [deployment(observedGeneration=2, updatedReplicas=2, availableReplicas=1, replicas=2)],
    )
    with pytest.raises(KubelabTimeout) as info:
        fake_kube(t, poll=5).wait_rollout("Deployment", "app-backend-v2", "istio", timeout=180)
    assert str(info.value) == (
        "timed out waiting for deployment/app-backend-v2 in namespace istio (180s): "
        "1 of 2 updated replicas are available. Try: kubelab status --verbose"
    )
    assert info.value.exit_code == ExitCode.TIMEOUT
    assert t.sleeps == [5] * 36  # polled at the Kube's interval until 180s had passed


def test_wait_for_returns_the_value_and_times_out_without_a_reason() -> None:
    t = FakeTime()
    values = iter([None, 0, Pending("x"), {"ok": 1}])
    assert fake_kube(t).wait_for(lambda: next(values), timeout=10, what="thing") == {"ok": 1}
    t2 = FakeTime()
    with pytest.raises(KubelabTimeout) as info:
        fake_kube(t2).wait_for(lambda: None, timeout=0.5, poll=0.1, what="pod/curl-test")
    assert str(info.value) == (
        "timed out waiting for pod/curl-test (0.5s). Try: kubelab status --verbose"
    )


def test_wait_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    t = FakeTime()
    crd = {"metadata": {"name": "canaries.flagger.app"}}
    established = {**crd, "status": {"conditions": [{"type": "Established", "status": "True"}]}}
    pending = {**crd, "status": {"conditions": [{"type": "Established", "status": "False"}]}}
    seen = feed(monkeypatch, [None, pending, established])
    kube = fake_kube(t)
    assert (
        kube.wait_condition(
            kube_mod.CRD_API,
            "CustomResourceDefinition",
            "canaries.flagger.app",
            None,
            "Established",
        )
        is established
    )
    assert seen[0] == (kube_mod.CRD_API, "CustomResourceDefinition", "canaries.flagger.app", None)
    feed(monkeypatch, [pending])
    with pytest.raises(
        KubelabTimeout,
        match=r"customresourcedefinition/canaries.flagger.app to be Established \(2s\): "
        r"condition Established is not True yet",
    ):
        kube.wait_condition(
            kube_mod.CRD_API,
            "CustomResourceDefinition",
            "canaries.flagger.app",
            None,
            "Established",
            2,
            poll=1,
        )


def test_wait_rollout_rejects_other_kinds() -> None:
    with pytest.raises(ValueError):
        Kube(None).wait_rollout("Service", "x", "y")
