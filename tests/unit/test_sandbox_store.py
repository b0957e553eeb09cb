"""The sandbox store: Kubernetes object semantics, the four patch types, watch events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubelab.sandbox import resources
from kubelab.sandbox.errors import ApiError
from kubelab.sandbox.patches import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_json_patch,
    apply_merge_patch,
    strategic_merge,
)
from kubelab.sandbox.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NAMESPACES,
    PODS,
    REPLICASETS,
    SERVICES,
    VIRTUALSERVICES,
)
from kubelab.sandbox.store import Store

VS_V1BETA1 = resources.by_plural("networking.istio.io", "v1beta1", "virtualservices")
VS_V1ALPHA3 = resources.by_plural("networking.istio.io", "v1alpha3", "virtualservices")


POD_SPEC: dict[str, Any] = {"containers": [{"name": "c", "image": "c:1"}]}


def rs_spec(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": POD_SPEC},
    }


def deployment(name: str = "web", env: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:v1",
                            "env": env or [{"name": "A", "value": "1"}],
                            "ports": [{"containerPort": 8080}],
                        },
                        {"name": "sidecar", "image": "proxy:1"},
                    ]
                },
            },
        },
    }


def virtual_service(name: str = "app-backend", namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": ["*"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "app", "subset": "v1"}, "weight": 90},
                        {"destination": {"host": "app", "subset": "v2"}, "weight": 10},
                    ]
                }
            ],
        },
    }


def error_of(call: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


# ----------------------------------------------------------------- objects


def test_create_sets_server_fields_and_returns_copies():
    store = Store()
    created = store.create(CONFIGMAPS, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    meta = created["metadata"]
    assert meta["namespace"] == "default"  # no namespace in the object: "default"
    assert "generation" not in meta  # ConfigMaps keep none, as in Kubernetes
    assert meta["resourceVersion"] == str(store.resource_version)
    assert meta["creationTimestamp"].endswith("Z") and len(meta["uid"]) == 36
    assert created["apiVersion"] == "v1" and created["kind"] == "ConfigMap"
    created["data"]["a"] = "changed"  # callers get copies
    assert store.get(CONFIGMAPS, "default", "cm")["data"] == {"a": "1"}


def test_default_namespaces_and_generate_name():
    store = Store()
    names = [n["metadata"]["name"] for n in store.list(NAMESPACES)[0]]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    pod = store.create(PODS, {"metadata": {"generateName": "web-"}, "spec": POD_SPEC})
    assert pod["metadata"]["name"].startswith("web-") and len(pod["metadata"]["name"]) == 9
    assert pod["status"] == {"phase": "Pending"}


def test_create_errors():
    store = Store()
    store.create(CONFIGMAPS, {"metadata": {"name": "cm"}})
    e = error_of(store.create, CONFIGMAPS, {"metadata": {"name": "cm"}})
    assert (e.code, e.reason, e.message) == (409, "AlreadyExists", 'configmaps "cm" already exists')
    e = error_of(store.create, VIRTUALSERVICES, virtual_service(namespace="istio"))
    assert (e.code, e.message) == (404, 'namespaces "istio" not found')
    e = error_of(store.create, CONFIGMAPS, {"metadata": {"name": "Bad_Name"}})
    assert e.code == 422 and e.reason == "Invalid"
    assert e.message.startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value')
    e = error_of(store.create, SERVICES, {"metadata": {"name": "1svc"}, "spec": {}})
    assert "DNS-1035" in e.message
    e = error_of(store.create, CONFIGMAPS, {"metadata": {}})
    assert e.code == 422 and "name or generateName is required" in e.message
    e = error_of(store.create, CONFIGMAPS, {"metadata": {"name": "x", "labels": {"a": 1}}})
    assert e.code == 400


def test_not_found_messages_name_the_group():
    store = Store()
    e = error_of(store.get, VIRTUALSERVICES, "istio", "app-backend")
    assert e.message == 'virtualservices.networking.istio.io "app-backend" not found'
    assert e.status() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'virtualservices.networking.istio.io "app-backend" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {
            "name": "app-backend",
            "group": "networking.istio.io",
            "kind": "virtualservices",
        },
    }
    assert (
        error_of(store.get, DEPLOYMENTS, "default", "x").message == 'deployments.apps "x" not found'
    )


def test_one_storage_for_every_served_version():
    store = Store()
    store.create(VS_V1BETA1, virtual_service())
    assert store.get(VS_V1ALPHA3, "default", "app-backend")["apiVersion"] == (
        "networking.istio.io/v1alpha3"
    )
    items, _ = store.list(VIRTUALSERVICES)
    assert [i["apiVersion"] for i in items] == ["networking.istio.io/v1"]
    assert error_of(store.create, VS_V1ALPHA3, virtual_service()).code == 409


def test_generation_changes_only_with_the_spec():
    store = Store()
    store.create(DEPLOYMENTS, deployment())
    rv0 = store.resource_version
    labelled = store.patch(
        DEPLOYMENTS, "default", "web", MERGE_PATCH, {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    scaled = store.patch(DEPLOYMENTS, "default", "web", MERGE_PATCH, {"spec": {"replicas": 3}})
    assert scaled["metadata"]["generation"] == 2
    status = store.update_status(DEPLOYMENTS, "default", "web", {"observedGeneration": 2})
    assert status["metadata"]["generation"] == 2 and status["status"] == {"observedGeneration": 2}
    assert store.resource_version == rv0 + 3


def test_no_op_writes_change_nothing():
    store = Store()
    store.create(DEPLOYMENTS, deployment())
    store.update_status(DEPLOYMENTS, "default", "web", {"replicas": 1})
    queue = store.subscribe()
    rv = store.resource_version
    store.update_status(DEPLOYMENTS, "default", "web", {"replicas": 1})
    store.patch(DEPLOYMENTS, "default", "web", MERGE_PATCH, {"spec": {"replicas": 2}})
    store.replace(DEPLOYMENTS, store.get(DEPLOYMENTS, "default", "web"))
    assert store.resource_version == rv
    assert queue.empty()


def test_status_subresource_semantics():
    store = Store()
    obj = deployment()
    obj["status"] = {"replicas": 99}
    created = store.create(DEPLOYMENTS, obj)
    assert "status" not in created  # written through the status subresource only
    store.update_status(DEPLOYMENTS, "default", "web", {"replicas": 1})
    replaced = store.replace(DEPLOYMENTS, dict(deployment(), status={"replicas": 5}))
    assert replaced["status"] == {"replicas": 1}
    patched = store.patch(DEPLOYMENTS, "default", "web", MERGE_PATCH, {"status": {"replicas": 7}})
    assert patched["status"] == {"replicas": 1}
    via_status = store.patch(
        DEPLOYMENTS,
        "default",
        "web",
        MERGE_PATCH,
        {"status": {"replicas": 7}},
        subresource="status",
    )
    assert via_status["status"] == {"replicas": 7}
    # ConfigMaps have no status subresource: nothing special.
    cm = store.create(CONFIGMAPS, {"metadata": {"name": "c"}, "status": {"x": 1}})
    assert cm["status"] == {"x": 1}


def test_defaults():
    store = Store()
    dep = store.create(DEPLOYMENTS, {**deployment(), "spec": {**deployment()["spec"]}})
    bare = {"metadata": {"name": "bare"}, "spec": rs_spec("bare")}
    dep_spec = store.create(DEPLOYMENTS, bare)["spec"]
    assert dep_spec["replicas"] == 1 and dep_spec["strategy"]["type"] == "RollingUpdate"
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["protocol"] == "TCP"
    assert container["imagePullPolicy"] == "IfNotPresent"
    svc = store.create(SERVICES, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["clusterIP"].startswith("10.96.")
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    kept = store.replace(SERVICES, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 81}]}})
    assert kept["spec"]["clusterIP"] == svc["spec"]["clusterIP"]
    ns = store.get(NAMESPACES, None, "default")
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "default"}
    assert ns["status"] == {"phase": "Active"}
    secret = store.create(resources.SECRETS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    assert secret["data"] == {"k": "dg=="} and secret["type"] == "Opaque"


def test_resource_version_conflicts():
    store = Store()
    first = store.create(CONFIGMAPS, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    store.patch(CONFIGMAPS, "default", "cm", MERGE_PATCH, {"data": {"a": "2"}})
    stale = dict(first, data={"a": "3"})
    e = error_of(store.replace, CONFIGMAPS, stale)
    assert (e.code, e.reason) == (409, "Conflict")
    assert e.message == (
        'Operation cannot be fulfilled on configmaps "cm": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    rv_patch = {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}}
    assert error_of(store.patch, CONFIGMAPS, "default", "cm", MERGE_PATCH, rv_patch).code == 409
    current = store.get(CONFIGMAPS, "default", "cm")
    assert store.replace(CONFIGMAPS, dict(current, data={"a": "4"}))["data"] == {"a": "4"}
    # No resourceVersion: an unconditional update.
    unconditional = {"metadata": {"name": "cm"}, "data": {"a": "5"}}
    assert store.replace(CONFIGMAPS, unconditional)["data"] == {"a": "5"}
    assert error_of(store.replace, CONFIGMAPS, {"metadata": {"name": "nope"}}).code == 404


def test_delete_preconditions_and_dry_run():
    store = Store()
    cm = store.create(CONFIGMAPS, {"metadata": {"name": "cm"}})
    e = error_of(store.delete, CONFIGMAPS, "default", "cm", preconditions={"uid": "other"})
    assert e.code == 409 and "Precondition failed: uid" in e.message
    store.delete(CONFIGMAPS, "default", "cm", dry_run=True)
    assert store.exists(CONFIGMAPS, "default", "cm")
    gone = store.delete(CONFIGMAPS, "default", "cm", preconditions={"uid": cm["metadata"]["uid"]})
    assert gone["metadata"]["name"] == "cm" and not store.exists(CONFIGMAPS, "default", "cm")
    assert store.create(CONFIGMAPS, {"metadata": {"name": "x"}}, dry_run=True)
    assert not store.exists(CONFIGMAPS, "default", "x")


def test_namespace_deletion_cascades():
    store = Store()
    store.create(NAMESPACES, {"metadata": {"name": "istio"}})
    store.create(VIRTUALSERVICES, virtual_service(namespace="istio"))
    store.create(DEPLOYMENTS, dict(deployment(), metadata={"name": "web", "namespace": "istio"}))
    store.create(CONFIGMAPS, {"metadata": {"name": "keep"}})
    queue = store.subscribe()
    store.delete(NAMESPACES, None, "istio")
    events = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [(e.type, e.resource.kind) for e in events] == [
        ("DELETED", "ServiceAccount"),  # the namespace's default one
        ("DELETED", "Deployment"),
        ("DELETED", "VirtualService"),
        ("DELETED", "Namespace"),
    ]
    assert store.list(VIRTUALSERVICES)[0] == [] and store.list(DEPLOYMENTS)[0] == []
    assert store.exists(CONFIGMAPS, "default", "keep")


def test_namespace_termination_is_graceful_when_asked():
    async def scenario() -> None:
        store = Store(namespace_termination=0.05)
        store.create(NAMESPACES, {"metadata": {"name": "istio"}})
        store.create(CONFIGMAPS, {"metadata": {"name": "c", "namespace": "istio"}})
        terminating = store.delete(NAMESPACES, None, "istio")
        assert terminating["status"]["phase"] == "Terminating"
        # Content can still be deleted one by one (kubectl delete -f), not created.
        store.delete(CONFIGMAPS, "istio", "c")
        e = error_of(store.create, CONFIGMAPS, {"metadata": {"name": "d", "namespace": "istio"}})
        assert e.code == 403 and "being terminated" in e.message
        await asyncio.sleep(0.1)
        assert not store.exists(NAMESPACES, None, "istio")

    asyncio.run(scenario())


def test_owner_references_are_garbage_collected():
    store = Store()
    dep = store.create(DEPLOYMENTS, deployment())
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": dep["metadata"]["uid"],
    }
    rs = store.create(
        REPLICASETS,
        {"metadata": {"name": "web-1", "ownerReferences": [owner]}, "spec": rs_spec("web")},
    )
    rs_owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web-1",
        "uid": rs["metadata"]["uid"],
    }
    store.create(
        PODS, {"metadata": {"name": "web-1-a", "ownerReferences": [rs_owner]}, "spec": POD_SPEC}
    )
    store.create(PODS, {"metadata": {"name": "other"}, "spec": POD_SPEC})
    store.delete(DEPLOYMENTS, "default", "web")
    assert [p["metadata"]["name"] for p in store.list(PODS)[0]] == ["other"]
    assert store.list(REPLICASETS)[0] == []
    # Orphan keeps the dependents.
    dep = store.create(DEPLOYMENTS, deployment())
    owner["uid"] = dep["metadata"]["uid"]
    store.create(
        REPLICASETS,
        {"metadata": {"name": "web-2", "ownerReferences": [owner]}, "spec": rs_spec("web")},
    )
    store.delete(DEPLOYMENTS, "default", "web", propagation_policy="Orphan")
    assert store.exists(REPLICASETS, "default", "web-2")
    # ... and frees them, as the garbage collector does.
    assert "ownerReferences" not in store.get(REPLICASETS, "default", "web-2")["metadata"]


def test_selectors():
    store = Store()
    for name, labels, phase in [
        ("a", {"app": "x", "version": "v1"}, "Running"),
        ("b", {"app": "x", "version": "v2"}, "Pending"),
        ("c", {"app": "y"}, "Running"),
    ]:
        store.create(PODS, {"metadata": {"name": name, "labels": labels}, "spec": POD_SPEC})
        store.update_status(PODS, "default", name, {"phase": phase})

    def names(label: str = "", field: str = "") -> list[str]:
        return [p["metadata"]["name"] for p in store.list(PODS, "default", label, field)[0]]

    assert names("app=x,version!=v1") == ["b"]
    assert names("version in (v1,v2)") == ["a", "b"]
    assert names("!version") == ["c"]
    assert names(field="status.phase=Running") == ["a", "c"]
    assert names("app=x", "status.phase!=Running") == ["b"]
    assert names(field="metadata.name=c,metadata.namespace=default") == ["c"]
    assert store.list(PODS, "other")[0] == []
    assert error_of(store.list, PODS, None, "app in x").code == 400
    assert error_of(store.list, PODS, None, "", "nonsense").code == 400


def test_validation_hook_makes_writes_invalid():
    def validate(obj: dict[str, Any]) -> list[str]:
        if obj["kind"] != "VirtualService":
            return []
        weights = [r.get("weight", 0) for r in obj["spec"]["http"][0]["route"]]
        problems = [] if sum(weights) == 100 else ["spec.http[0].route: weights must sum to 100"]
        return problems + ([] if obj["apiVersion"].startswith("networking") else ["bad"])

    store = Store(validate=validate)
    store.create(VS_V1BETA1, virtual_service())
    bad = [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 50}]
    e = error_of(store.patch, VIRTUALSERVICES, "default", "app-backend", JSON_PATCH, bad)
    assert e.code == 422
    assert e.message == (
        'VirtualService.networking.istio.io "app-backend" is invalid: '
        "spec.http[0].route: weights must sum to 100"
    )
    assert e.details == {
        "name": "app-backend",
        "group": "networking.istio.io",
        "kind": "VirtualService",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": "weights must sum to 100",
                "field": "spec.http[0].route",
            }
        ],
    }
    weights = store.get(VIRTUALSERVICES, "default", "app-backend")["spec"]["http"][0]["route"]
    assert [r["weight"] for r in weights] == [90, 10]  # unchanged


# ----------------------------------------------------------------- watch


def test_watch_events_in_order():
    store = Store()
    queue = store.subscribe()
    store.create(VS_V1BETA1, virtual_service())
    store.patch(VIRTUALSERVICES, "default", "app-backend", MERGE_PATCH, {"spec": {"hosts": ["a"]}})
    store.update_status(VIRTUALSERVICES, "default", "app-backend", {"ok": True})
    store.delete(VS_V1ALPHA3, "default", "app-backend")
    events = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    versions = [int(e.object["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert all(e.resource is VIRTUALSERVICES for e in events)  # the preferred version
    assert {e.object["apiVersion"] for e in events} == {"networking.istio.io/v1"}
    events[0].object["spec"] = "mutated"  # each event carries its own copy
    assert store.changes_since(0) is not None
    store.unsubscribe(queue)
    store.create(CONFIGMAPS, {"metadata": {"name": "after"}})
    assert queue.empty()


def test_history_reaches_back_as_far_as_it_is_kept():
    store = Store(history=3, namespaces=())
    store.create(NAMESPACES, {"metadata": {"name": "default"}})  # and its ServiceAccount
    for i in range(4):
        store.create(CONFIGMAPS, {"metadata": {"name": f"c{i}"}})
    assert store.resource_version == 6
    changes = store.changes_since(3)
    assert changes is not None
    assert [c.resource_version for c in changes] == [4, 5, 6]
    assert store.changes_since(2) is None  # change 3 was dropped: clients must relist
    assert store.changes_since(6) == []


# ----------------------------------------------------------------- patch types


def test_course_json_patch():
    store = Store()
    store.create(VIRTUALSERVICES, virtual_service())
    patch = [
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 50},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 50},
    ]
    out = store.patch(VIRTUALSERVICES, "default", "app-backend", JSON_PATCH, patch)
    assert [r["weight"] for r in out["spec"]["http"][0]["route"]] == [50, 50]
    assert out["metadata"]["generation"] == 2


# RFC 6902 appendix A (and edge cases around it).
@pytest.mark.parametrize(
    ("doc", "patch", "expected"),
    [
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"foo": "bar", "baz": "qux"},
        ),
        (
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"foo": [1]}, [{"op": "add", "path": "/foo/-", "value": 2}], {"foo": [1, 2]}),
        ({"foo": [1]}, [{"op": "add", "path": "/foo/1", "value": 2}], {"foo": [1, 2]}),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        (
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
        ),
        ({"baz": "qux"}, [{"op": "replace", "path": "/baz", "value": "boo"}], {"baz": "boo"}),
        (
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        ),
        (
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
        ),
        (
            {"foo": {"a": 1}},
            [{"op": "copy", "from": "/foo", "path": "/bar"}],
            {"foo": {"a": 1}, "bar": {"a": 1}},
        ),
        (
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2},
            ],
            {"baz": "qux", "foo": ["a", 2, "c"]},
        ),
        (
            {"/": 9, "~1": 10},
            [
                {"op": "test", "path": "/~01", "value": 10},
                {"op": "replace", "path": "/~1", "value": 1},
            ],
            {"/": 1, "~1": 10},
        ),
        ({"foo": 1}, [{"op": "replace", "path": "", "value": {"x": 1}}], {"x": 1}),
        ({"n": 1}, [{"op": "test", "path": "/n", "value": 1.0}], {"n": 1}),
        ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": {"b": 1}}),
    ],
)
def test_json_patch_rfc6902(doc, patch, expected):
    assert apply_json_patch(doc, patch) == expected


@pytest.mark.parametrize(
    ("doc", "patch", "code"),
    [
        ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], 422),
        ({"foo": "bar"}, [{"op": "remove", "path": "/nope"}], 422),
        ({"foo": "bar"}, [{"op": "replace", "path": "/nope", "value": 1}], 422),
        ({"foo": [1]}, [{"op": "add", "path": "/foo/2", "value": 1}], 422),
        ({"foo": [1, 2]}, [{"op": "remove", "path": "/foo/01"}], 422),
        ({"foo": [1]}, [{"op": "replace", "path": "/foo/-", "value": 1}], 422),
        ({"foo": True}, [{"op": "test", "path": "/foo", "value": 1}], 422),
        ({"foo": "bar"}, [{"op": "test", "path": "/foo", "value": "baz"}], 422),
        ({"a": {"b": {}}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}], 422),
        ({"foo": "bar"}, [{"op": "add", "path": "foo", "value": 1}], 422),
        ({"foo": "bar"}, [{"op": "add", "path": "/a~2", "value": 1}], 422),
        ({"foo": "bar"}, [{"op": "add", "path": "/x"}], 400),
        ({"foo": "bar"}, [{"op": "frobnicate", "path": "/x"}], 400),
        ({"foo": "bar"}, {"op": "add", "path": "/x", "value": 1}, 400),
        ({"foo": "bar"}, [{"op": "move", "path": "/x"}], 400),
    ],
)
def test_json_patch_errors(doc, patch, code):
    assert error_of(apply_json_patch, doc, patch).code == code


def test_json_patch_is_all_or_nothing():
    store = Store()
    store.create(CONFIGMAPS, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    patch = [
        {"op": "replace", "path": "/data/a", "value": "2"},
        {"op": "test", "path": "/data/a", "value": "1"},
    ]
    assert error_of(store.patch, CONFIGMAPS, "default", "cm", JSON_PATCH, patch).code == 422
    assert store.get(CONFIGMAPS, "default", "cm")["data"] == {"a": "1"}
    doc = {"x": [1]}
    apply_json_patch(doc, [{"op": "add", "path": "/x/-", "value": 2}])
    assert doc == {"x": [1]}  # the input is never modified


# RFC 7386 appendix A.
@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386(target, patch, expected):
    assert apply_merge_patch(target, patch) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3)
    ),
    max_leaves=12,
)


@given(json_values, json_values)
def test_merge_patch_is_idempotent(target, patch):
    once = apply_merge_patch(target, patch)
    assert apply_merge_patch(once, patch) == once


@given(st.dictionaries(st.text(max_size=3), json_values, max_size=4), st.text(max_size=3))
def test_json_patch_add_then_remove_is_identity(doc, key):
    pointer = "/" + key.replace("~", "~0").replace("/", "~1")
    if key in doc:
        return
    added = apply_json_patch(doc, [{"op": "add", "path": pointer, "value": {"v": [1]}}])
    assert apply_json_patch(added, [{"op": "remove", "path": pointer}]) == doc


def test_strategic_merge_by_keys():
    store = Store()
    store.create(
        DEPLOYMENTS, deployment(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    )
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:v2",
                            "env": [{"name": "B", "value": "22"}, {"name": "C", "value": "3"}],
                            "ports": [{"containerPort": 9090}],
                        }
                    ]
                }
            }
        }
    }
    out = store.patch(DEPLOYMENTS, "default", "web", STRATEGIC_MERGE_PATCH, patch)
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "sidecar"]
    assert containers[0]["image"] == "app:v2"
    assert containers[0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "22"},
        {"name": "C", "value": "3"},
    ]
    assert [p["containerPort"] for p in containers[0]["ports"]] == [8080, 9090]
    assert out["metadata"]["generation"] == 2


def test_strategic_merge_directives():
    live = {
        "metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
        "spec": {
            "containers": [{"name": "a", "args": ["1", "2"]}, {"name": "b"}, {"name": "c"}],
            "tolerations": [{"key": "k"}],
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "volumes": [{"name": "v", "emptyDir": {}}],
        },
    }
    patch = {
        "metadata": {"finalizers": ["b", "a"], "labels": {"x": None}},
        "spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
            "containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "args": ["3"]}],
            "tolerations": [{"key": "other"}],
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "volumes": [{"$patch": "replace"}, {"name": "w", "configMap": {"name": "cm"}}],
        },
    }
    out = strategic_merge(live, patch)
    assert out["metadata"] == {"finalizers": ["a", "b"], "labels": {"y": "2"}}
    assert out["spec"]["containers"] == [{"name": "c"}, {"name": "a", "args": ["3"]}]
    assert out["spec"]["tolerations"] == [{"key": "other"}]  # no merge key: replaced
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    assert out["spec"]["volumes"] == [{"name": "w", "configMap": {"name": "cm"}}]
    assert strategic_merge({"a": {"b": 1}}, {"a": {"$patch": "replace", "c": 2}}) == {"a": {"c": 2}}
    assert strategic_merge({"a": {"b": 1}, "k": 1}, {"a": {"$patch": "delete"}}) == {"k": 1}
    assert live["spec"]["containers"][1] == {"name": "b"}  # input untouched


def test_strategic_merge_is_refused_for_custom_resources():
    store = Store()
    store.create(VIRTUALSERVICES, virtual_service())
    patch = {"spec": {"hosts": ["x"]}}
    e = error_of(
        store.patch, VIRTUALSERVICES, "default", "app-backend", STRATEGIC_MERGE_PATCH, patch
    )
    assert (e.code, e.reason) == (415, "UnsupportedMediaType")
    assert "application/strategic-merge-patch+json" not in e.message
    e = error_of(store.patch, CONFIGMAPS, "default", "x", "application/json", {})
    assert e.code == 415


def test_apply_patch_creates_then_merges():
    store = Store()
    applied = virtual_service()
    created = store.patch(
        VIRTUALSERVICES, "default", "app-backend", APPLY_PATCH, applied, "kubectl"
    )
    assert created["metadata"]["generation"] == 1
    assert [m["manager"] for m in created["metadata"]["managedFields"]] == ["kubectl"]
    applied["spec"]["hosts"] = ["b"]
    merged = store.patch(VIRTUALSERVICES, "default", "app-backend", APPLY_PATCH, applied, "kubectl")
    assert merged["spec"]["hosts"] == ["b"] and merged["metadata"]["generation"] == 2
    e = error_of(
        store.patch,
        VIRTUALSERVICES,
        "default",
        "other",
        APPLY_PATCH,
        virtual_service("x"),
        "kubectl",
    )
    assert e.code == 400 and "does not match the name on the URL" in e.message
    # An apply must name its field manager, as kube-apiserver requires.
    e = error_of(store.patch, VIRTUALSERVICES, "default", "app-backend", APPLY_PATCH, applied)
    assert e.code == 422 and "fieldManager: Required value" in e.message


def configmap_applied(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": data}


def test_apply_records_its_fields_and_conflicts_with_another_manager():
    store = Store()
    created = store.patch(
        CONFIGMAPS, "default", "s", APPLY_PATCH, configmap_applied({"m": "a"}), "kubectl"
    )
    entry = created["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"], entry["fieldsV1"]) == (
        "kubectl",
        "Apply",
        {"f:data": {"f:m": {}}},
    )
    other = configmap_applied({"m": "b"})
    e = error_of(store.patch, CONFIGMAPS, "default", "s", APPLY_PATCH, other, "other")
    assert (e.code, e.reason) == (409, "Conflict")
    assert e.message == 'Apply failed with 1 conflict: conflict with "kubectl": .data.m'
    assert e.details == {
        "causes": [
            {
                "reason": "FieldManagerConflict",
                "message": 'conflict with "kubectl"',
                "field": ".data.m",
            }
        ]
    }
    # The same value is no conflict: both own the field.
    same = store.patch(
        CONFIGMAPS, "default", "s", APPLY_PATCH, configmap_applied({"m": "a"}), "other"
    )
    assert sorted(m["manager"] for m in same["metadata"]["managedFields"]) == ["kubectl", "other"]
    forced = store.patch(CONFIGMAPS, "default", "s", APPLY_PATCH, other, "other", force=True)
    assert forced["data"] == {"m": "b"}
    assert [m["manager"] for m in forced["metadata"]["managedFields"]] == ["other"]


def test_apply_removes_what_the_applier_dropped_unless_another_owns_it():
    store = Store()
    store.patch(
        CONFIGMAPS, "default", "s", APPLY_PATCH, configmap_applied({"a": "1", "b": "2"}), "kubectl"
    )
    store.patch(CONFIGMAPS, "default", "s", MERGE_PATCH, {"data": {"c": "3"}}, "editor")
    dropped = store.patch(
        CONFIGMAPS, "default", "s", APPLY_PATCH, configmap_applied({"a": "1"}), "kubectl"
    )
    assert dropped["data"] == {"a": "1", "c": "3"}  # b was kubectl's, c is the editor's
    editor = next(m for m in dropped["metadata"]["managedFields"] if m["manager"] == "editor")
    assert (editor["operation"], editor["fieldsV1"]) == ("Update", {"f:data": {"f:c": {}}})


def test_apply_merges_containers_by_name_across_managers():
    store = Store()
    dep = deployment()
    dep["spec"]["template"]["spec"]["containers"] = [{"name": "app", "image": "app:1"}]
    store.patch(DEPLOYMENTS, "default", "web", APPLY_PATCH, dep, "kubectl")
    sidecar = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "p:1"}]}}},
    }
    store.patch(DEPLOYMENTS, "default", "web", APPLY_PATCH, sidecar, "injector")
    again = store.patch(DEPLOYMENTS, "default", "web", APPLY_PATCH, dep, "kubectl")
    assert [c["name"] for c in again["spec"]["template"]["spec"]["containers"]] == ["app", "proxy"]


def test_patch_cannot_rename():
    store = Store()
    store.create(CONFIGMAPS, {"metadata": {"name": "cm"}})
    rename = [{"op": "replace", "path": "/metadata/name", "value": "other"}]
    assert error_of(store.patch, CONFIGMAPS, "default", "cm", JSON_PATCH, rename).code == 400
    wipe = [{"op": "replace", "path": "", "value": []}]
    assert error_of(store.patch, CONFIGMAPS, "default", "cm", JSON_PATCH, wipe).code == 422
