"""The operations of the fidelity suite (:mod:`fidelity`), by category.

Each case runs in a fresh namespace on one side and returns what it observed. Keep them
independent: a case sets up what it needs.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from fidelity import (
    Side,
    case,
    configmap,
    deployment,
    normalize,
    pod,
    project,
    status_shape,
)

DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"
PODS = "/api/v1/namespaces/{ns}/pods"
SERVICES = "/api/v1/namespaces/{ns}/services"
VIRTUALSERVICES = "/apis/networking.istio.io/v1beta1/namespaces/{ns}/virtualservices"


def _created(side: Side, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    code, body = side.post(path, obj)
    assert code == 201, f"{side.name}: creating {obj['metadata']['name']}: {code} {body}"
    return body


def _wait_pod_running(side: Side, name: str) -> None:
    def running() -> bool:
        code, body = side.get(f"{PODS}/{name}")
        return code == 200 and (body.get("status") or {}).get("phase") == "Running"

    side.wait(f"pod {name} Running", running)


# ------------------------------------------------------------------------ reads


@case("reads")
def case_get_missing_object(side: Side) -> Any:
    """GET of an object that does not exist: the 404 Status."""
    return status_shape(side.get(f"{CONFIGMAPS}/nope"))


@case("reads")
def case_kubectl_get_missing(side: Side) -> Any:
    """kubectl get of a missing Deployment: exit 1 and the server's message."""
    return side.kubectl("get", "deployment", "nope")


@case("reads")
def case_get_configmap_roundtrip(side: Side) -> Any:
    """A created ConfigMap read back: everything but server-set values."""
    _created(side, CONFIGMAPS, configmap(data={"a": "1", "b": "two"}))
    _code, body = side.get(f"{CONFIGMAPS}/settings")
    body["metadata"].pop("managedFields", None)
    return normalize(body)


@case("reads")
def case_list_empty(side: Side) -> Any:
    """LIST of a kind with nothing in the namespace (Services: v1.20 still makes token
    Secrets for every ServiceAccount, v1.24 and later do not)."""
    code, body = side.get(SERVICES)
    return code, body.get("kind"), body.get("apiVersion"), body.get("items")


@case("reads")
def case_kubectl_get_configmaps_table(side: Side) -> Any:
    """kubectl get's table of ConfigMaps."""
    _created(side, CONFIGMAPS, configmap("one"))
    _created(side, CONFIGMAPS, configmap("two", {"x": "1", "y": "2"}))
    return side.kubectl("get", "configmaps", "one", "two")


@case("reads")
def case_default_service_account(side: Side) -> Any:
    """A new namespace has the ServiceAccount ``default``."""

    def present() -> bool:
        return side.get("/api/v1/namespaces/{ns}/serviceaccounts/default")[0] == 200

    deadline_ok = True
    try:
        side.wait("the default ServiceAccount", present, timeout=10)
    except AssertionError:
        deadline_ok = False
    return deadline_ok


# ------------------------------------------------------------------------ errors


@case("errors")
def case_create_twice(side: Side) -> Any:
    """Creating an object that exists: 409 AlreadyExists."""
    _created(side, CONFIGMAPS, configmap())
    return status_shape(side.post(CONFIGMAPS, configmap()))


@case("errors")
def case_stale_update(side: Side) -> Any:
    """A PUT with an old resourceVersion: 409 Conflict."""
    first = _created(side, CONFIGMAPS, configmap())
    newer = copy.deepcopy(first)
    newer["data"] = {"mode": "b"}
    assert side.http("PUT", f"{CONFIGMAPS}/settings", newer)[0] == 200
    first["data"] = {"mode": "c"}
    return status_shape(side.http("PUT", f"{CONFIGMAPS}/settings", first))


@case("errors")
def case_invalid_name(side: Side) -> Any:
    """A name with capitals: 422 with its cause."""
    return status_shape(side.post(CONFIGMAPS, configmap("Not_Valid")))


@case("errors")
def case_create_in_missing_namespace(side: Side) -> Any:
    """Creating in a namespace that does not exist: 404 naming the namespace."""
    return status_shape(side.post("/api/v1/namespaces/no-such-ns/configmaps", configmap()))


@case("errors")
def case_name_mismatch(side: Side) -> Any:
    """A PUT whose body names another object: 400."""
    body = _created(side, CONFIGMAPS, configmap())
    body["metadata"]["name"] = "other"
    return status_shape(side.http("PUT", f"{CONFIGMAPS}/settings", body))


@case("errors")
def case_bad_json_patch(side: Side) -> Any:
    """A JSON patch that tests a wrong value: the server refuses it."""
    _created(side, CONFIGMAPS, configmap())
    patch = [{"op": "test", "path": "/data/mode", "value": "zzz"}]
    answer = side.http(
        "PATCH",
        f"{CONFIGMAPS}/settings",
        patch,
        content_type="application/json-patch+json",
    )
    return answer[0]


@case("errors")
def case_strategic_patch_on_custom_resource(side: Side) -> Any:
    """A strategic merge patch of a custom resource: 415."""
    _created(side, VIRTUALSERVICES, _virtual_service())
    answer = side.http(
        "PATCH",
        f"{VIRTUALSERVICES}/app",
        {"spec": {"hosts": ["b"]}},
        content_type="application/strategic-merge-patch+json",
    )
    return answer[0], (answer[1] or {}).get("reason")


@case("errors")
def case_unsupported_field_selector(side: Side) -> Any:
    """A field selector the kind does not support: 400 BadRequest."""
    return status_shape(side.get(PODS, fieldSelector="spec.foo=bar"))


@case("errors")
def case_unknown_resource(side: Side) -> Any:
    """kubectl get of a resource type that does not exist."""
    rc, _out, err = side.kubectl("get", "widgets")
    return rc, err


# ------------------------------------------------------------------------ validation


def _invalid(side: Side, path: str, obj: dict[str, Any]) -> Any:
    return status_shape(side.post(path, obj))


@case("validation")
def case_label_value_with_space(side: Side) -> Any:
    """A label value with a space is refused with 422 and its field."""
    cm = configmap()
    cm["metadata"]["labels"] = {"tier": "a b"}
    return _invalid(side, CONFIGMAPS, cm)


@case("validation")
def case_deployment_without_selector(side: Side) -> Any:
    """A Deployment without spec.selector."""
    obj = deployment()
    del obj["spec"]["selector"]
    return _invalid(side, DEPLOYMENTS, obj)


@case("validation")
def case_deployment_without_containers(side: Side) -> Any:
    """A Deployment whose pod template has no containers."""
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"] = []
    return _invalid(side, DEPLOYMENTS, obj)


@case("validation")
def case_duplicate_container_name(side: Side) -> Any:
    """Two containers with the same name."""
    obj = deployment(containers=[{"name": "a", "image": "x"}, {"name": "a", "image": "y"}])
    return _invalid(side, DEPLOYMENTS, obj)


@case("validation")
def case_port_out_of_range(side: Side) -> Any:
    """A containerPort of 70000."""
    obj = deployment(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}])
    return _invalid(side, DEPLOYMENTS, obj)


@case("validation")
def case_unsupported_pull_policy(side: Side) -> Any:
    """imagePullPolicy: Sometimes."""
    obj = deployment(containers=[{"name": "a", "image": "x", "imagePullPolicy": "Sometimes"}])
    return _invalid(side, DEPLOYMENTS, obj)


@case("validation")
def case_selector_does_not_match_template(side: Side) -> Any:
    """A selector that does not select the template's labels."""
    obj = deployment()
    obj["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    return _invalid(side, DEPLOYMENTS, obj)


@case("validation")
def case_negative_replicas(side: Side) -> Any:
    """replicas: -1."""
    obj = deployment()
    obj["spec"]["replicas"] = -1
    return _invalid(side, DEPLOYMENTS, obj)


@case("validation")
def case_service_without_ports(side: Side) -> Any:
    """A ClusterIP Service without ports."""
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}},
    }
    return _invalid(side, SERVICES, svc)


@case("validation")
def case_pod_without_image(side: Side) -> Any:
    """A Pod container without an image."""
    obj = pod()
    del obj["spec"]["containers"][0]["image"]
    return _invalid(side, PODS, obj)


@case("validation")
def case_configmap_bad_key(side: Side) -> Any:
    """A ConfigMap key with a slash."""
    return _invalid(side, CONFIGMAPS, configmap(data={"a/b": "1"}))


@case("validation")
def case_wrong_type_is_a_decode_error(side: Side) -> Any:
    """replicas as a string: 400, the body cannot be decoded."""
    obj = deployment()
    obj["spec"]["replicas"] = "three"
    code, body = side.post(DEPLOYMENTS, obj)
    return code, (body or {}).get("reason")


@case("validation")
def case_kubectl_apply_invalid(side: Side) -> Any:
    """kubectl apply of a Deployment with a bad pull policy: exit 1, the server's error."""
    obj = deployment(containers=[{"name": "a", "image": "x", "imagePullPolicy": "Sometimes"}])
    rc, _out, err = side.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    return rc, err


# ------------------------------------------------------------------------ unknown fields


@case("unknown-fields")
def case_builtin_unknown_field_is_dropped(side: Side) -> Any:
    """The client (no fieldValidation) posts a Deployment with ``imagePullPolicyy``: it
    is stored without it."""
    obj = deployment(containers=[{"name": "a", "image": "x", "imagePullPolicyy": "Always"}])
    code, body = side.post(DEPLOYMENTS, obj)
    return code, dig_container(body)


@case("unknown-fields")
def case_custom_resource_unknown_field_is_pruned(side: Side) -> Any:
    """A VirtualService with a field its schema does not declare is stored pruned."""
    vs = _virtual_service()
    vs["spec"]["colour"] = "blue"
    vs["spec"]["http"][0]["retriesz"] = {"attempts": 3}
    code, body = side.post(VIRTUALSERVICES, vs)
    return code, normalize((body or {}).get("spec"))


@case("unknown-fields")
def case_kubectl_apply_unknown_field(side: Side) -> Any:
    """kubectl apply of a Deployment with an unknown field fails and names it.

    kubectl validates on the client against a v1.20 server and asks a v1.31 server to
    (strict field validation): compared is the outcome, not the wording."""
    obj = deployment(containers=[{"name": "a", "image": "x", "imagePullPolicyy": "Always"}])
    rc, _out, err = side.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    stored = side.get(f"{DEPLOYMENTS}/web")[0]
    return rc, "imagePullPolicyy" in err, stored


@case("unknown-fields")
def case_kubectl_apply_unknown_field_custom_resource(side: Side) -> Any:
    """kubectl apply of a VirtualService with an unknown field fails and names it
    (compared: outcome)."""
    vs = _virtual_service()
    vs["spec"]["colour"] = "blue"
    rc, _out, err = side.kubectl("apply", "-f", "-", stdin=json.dumps(vs))
    stored = side.get(f"{VIRTUALSERVICES}/app")[0]
    return rc, "colour" in err, stored


def dig_container(body: Any) -> Any:
    try:
        return body["spec"]["template"]["spec"]["containers"][0]
    except (KeyError, IndexError, TypeError):
        return normalize(body)


def _virtual_service() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "app"},
        "spec": {
            "hosts": ["app"],
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


# ------------------------------------------------------------------------ defaults


@case("defaults")
def case_deployment_defaults(side: Side) -> Any:
    """What the server fills in on a minimal Deployment."""
    body = _created(side, DEPLOYMENTS, deployment())
    return project(
        body,
        "spec.strategy",
        "spec.revisionHistoryLimit",
        "spec.progressDeadlineSeconds",
        "spec.template.spec.restartPolicy",
        "spec.template.spec.dnsPolicy",
        "spec.template.spec.schedulerName",
        "spec.template.spec.terminationGracePeriodSeconds",
        "spec.template.spec.securityContext",
        "spec.template.spec.containers.0.imagePullPolicy",
        "spec.template.spec.containers.0.terminationMessagePath",
        "spec.template.spec.containers.0.terminationMessagePolicy",
    )


@case("defaults")
def case_pod_defaults(side: Side) -> Any:
    """What the server fills in on a minimal Pod (ServiceAccount, tolerations, ...)."""
    body = _created(side, PODS, pod())
    return project(
        body,
        "spec.serviceAccountName",
        "spec.serviceAccount",
        "spec.restartPolicy",
        "spec.dnsPolicy",
        "spec.enableServiceLinks",
        "spec.priority",
        "spec.tolerations",
        "spec.containers.0.imagePullPolicy",
    )


@case("defaults")
def case_service_defaults(side: Side) -> Any:
    """What the server fills in on a minimal Service."""
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    body = _created(side, SERVICES, svc)
    return project(body, "spec.type", "spec.sessionAffinity", "spec.ports")


# ------------------------------------------------------------------------ patches


@case("patches")
def case_merge_patch_removes_a_key(side: Side) -> Any:
    """A JSON merge patch with null removes the key."""
    _created(side, CONFIGMAPS, configmap(data={"a": "1", "b": "2"}))
    code, body = side.http(
        "PATCH",
        f"{CONFIGMAPS}/settings",
        {"data": {"a": None, "c": "3"}},
        content_type="application/merge-patch+json",
    )
    return code, body.get("data")


@case("patches")
def case_json_patch_add_and_replace(side: Side) -> Any:
    """A JSON patch adding a label and replacing a value."""
    _created(side, CONFIGMAPS, configmap())
    code, body = side.http(
        "PATCH",
        f"{CONFIGMAPS}/settings",
        [
            {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
            {"op": "replace", "path": "/data/mode", "value": "b"},
        ],
        content_type="application/json-patch+json",
    )
    return code, body["metadata"].get("labels"), body.get("data")


@case("patches")
def case_strategic_patch_merges_containers(side: Side) -> Any:
    """A strategic merge patch of a Deployment's containers merges by name."""
    obj = deployment(containers=[{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}])
    _created(side, DEPLOYMENTS, obj)
    code, body = side.http(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "y:2"}]}}}},
        content_type="application/strategic-merge-patch+json",
    )
    containers = body["spec"]["template"]["spec"]["containers"]
    return code, [(c["name"], c["image"]) for c in containers], body["metadata"]["generation"]


@case("patches")
def case_kubectl_patch_merge_vs(side: Side) -> Any:
    """kubectl patch --type merge of a VirtualService's weights (the course's patch)."""
    _created(side, VIRTUALSERVICES, _virtual_service())
    patch = {
        "spec": {
            "http": [
                {
                    "route": [
                        {"destination": {"host": "app", "subset": "v1"}, "weight": 50},
                        {"destination": {"host": "app", "subset": "v2"}, "weight": 50},
                    ]
                }
            ]
        }
    }
    result = side.kubectl(
        "patch", "virtualservice", "app", "--type", "merge", "-p", json.dumps(patch)
    )
    _code, body = side.get(f"{VIRTUALSERVICES}/app")
    return result, [r["weight"] for r in body["spec"]["http"][0]["route"]]


@case("patches")
def case_kubectl_label_and_annotate(side: Side) -> Any:
    """kubectl label and annotate, then overwrite without --overwrite."""
    _created(side, CONFIGMAPS, configmap())
    first = side.kubectl("label", "configmap", "settings", "tier=web")
    again = side.kubectl("label", "configmap", "settings", "tier=db")
    note = side.kubectl("annotate", "configmap", "settings", "owner=me")
    _code, body = side.get(f"{CONFIGMAPS}/settings")
    return first, again, note, body["metadata"].get("labels"), body["metadata"].get("annotations")


# ------------------------------------------------------------------------ apply


@case("apply")
def case_client_side_apply_twice(side: Side) -> Any:
    """kubectl apply, then apply again unchanged, then with a changed value."""
    cm = configmap()
    first = side.kubectl("apply", "-f", "-", stdin=json.dumps(cm))
    second = side.kubectl("apply", "-f", "-", stdin=json.dumps(cm))
    cm["data"] = {"mode": "b"}
    third = side.kubectl("apply", "-f", "-", stdin=json.dumps(cm))
    return first, second, third


@case("apply")
def case_client_side_apply_drops_removed_key(side: Side) -> Any:
    """kubectl apply removes a key the previous apply set and this one does not."""
    cm = configmap(data={"a": "1", "b": "2"})
    side.apply(cm)
    cm["data"] = {"a": "1"}
    side.apply(cm)
    return side.get(f"{CONFIGMAPS}/settings")[1].get("data")


@case("apply")
def case_apply_list_kind(side: Side) -> Any:
    """kubectl apply -f of a ``kind: List``."""
    doc = {"apiVersion": "v1", "kind": "List", "items": [configmap("one"), configmap("two")]}
    return side.kubectl("apply", "-f", "-", stdin=json.dumps(doc))


@case("server-side-apply")
def case_ssa_create_and_managed_fields(side: Side) -> Any:
    """kubectl apply --server-side creates the object, owned by field manager kubectl."""
    result = side.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(configmap()))
    _code, body = side.get(f"{CONFIGMAPS}/settings")
    managers = [
        (m.get("manager"), m.get("operation"), normalize(m.get("fieldsV1")))
        for m in body["metadata"].get("managedFields") or []
    ]
    return result, managers


@case("server-side-apply")
def case_ssa_conflict_between_managers(side: Side) -> Any:
    """A second field manager applying a different value conflicts (409) unless forced."""
    side.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(configmap()))
    other = configmap(data={"mode": "b"})
    conflict = side.kubectl(
        "apply", "--server-side", "--field-manager", "other", "-f", "-", stdin=json.dumps(other)
    )
    forced = side.kubectl(
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "--force-conflicts",
        "-f",
        "-",
        stdin=json.dumps(other),
    )
    return conflict, forced, side.get(f"{CONFIGMAPS}/settings")[1].get("data")


@case("server-side-apply")
def case_ssa_removes_a_dropped_field(side: Side) -> Any:
    """A field the applier no longer applies is removed."""
    side.kubectl(
        "apply", "--server-side", "-f", "-", stdin=json.dumps(configmap(data={"a": "1", "b": "2"}))
    )
    side.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(configmap(data={"a": "1"})))
    return side.get(f"{CONFIGMAPS}/settings")[1].get("data")


@case("server-side-apply")
def case_ssa_keeps_another_managers_field(side: Side) -> Any:
    """A key another manager applied survives the first applier's re-apply; the one the
    first applier dropped goes."""
    apply = ("apply", "--server-side", "-f", "-")
    side.kubectl(*apply, stdin=json.dumps(configmap(data={"a": "1", "gone": "x"})))
    side.kubectl(*apply, "--field-manager", "other", stdin=json.dumps(configmap(data={"b": "2"})))
    side.kubectl(*apply, stdin=json.dumps(configmap(data={"a": "1"})))
    body = side.get(f"{CONFIGMAPS}/settings")[1]
    managers = sorted(
        (m.get("manager"), normalize(m.get("fieldsV1")))
        for m in body["metadata"].get("managedFields") or []
    )
    return body.get("data"), managers


@case("server-side-apply-lists")
def case_ssa_keeps_another_managers_container(side: Side) -> Any:
    """A container another manager applied survives the first applier's re-apply (a
    list merged by key, as from Kubernetes 1.21; v1.20's schema made it atomic)."""
    side.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(deployment()))
    sidecar = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "sidecar", "image": "side:1"}]}},
        },
    }
    injected = side.kubectl(
        "apply",
        "--server-side",
        "--field-manager",
        "injector",
        "-f",
        "-",
        stdin=json.dumps(sidecar),
    )
    side.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(deployment()))
    body = side.get(f"{DEPLOYMENTS}/web")[1]
    return injected[0], [c["name"] for c in body["spec"]["template"]["spec"]["containers"]]


# ------------------------------------------------------------------------ selectors and pages


def _three_configmaps(side: Side) -> None:
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        cm = configmap(name)
        cm["metadata"]["labels"] = {"tier": tier}
        _created(side, CONFIGMAPS, cm)


def _names(answer: tuple[int, Any]) -> Any:
    code, body = answer
    if code != 200:
        return status_shape(answer)
    return [i["metadata"]["name"] for i in body.get("items", [])]


@case("selectors")
def case_label_selector_equality(side: Side) -> Any:
    """labelSelector tier=web and tier!=web."""
    _three_configmaps(side)
    return _names(side.get(CONFIGMAPS, labelSelector="tier=web")), _names(
        side.get(CONFIGMAPS, labelSelector="tier!=web")
    )


@case("selectors")
def case_label_selector_sets(side: Side) -> Any:
    """labelSelector with in, notin, exists and does-not-exist."""
    _three_configmaps(side)
    return [
        _names(side.get(CONFIGMAPS, labelSelector=s))
        for s in ("tier in (db,cache)", "tier notin (db)", "tier", "!tier")
    ]


@case("selectors")
def case_bad_label_selector(side: Side) -> Any:
    """A malformed labelSelector: 400."""
    return side.get(CONFIGMAPS, labelSelector="tier in (")[0]


@case("selectors")
def case_field_selector_name(side: Side) -> Any:
    """fieldSelector metadata.name=b."""
    _three_configmaps(side)
    return _names(side.get(CONFIGMAPS, fieldSelector="metadata.name=b"))


@case("selectors")
def case_pagination(side: Side) -> Any:
    """limit=2 then continue: every object once, the last page without a token."""
    _three_configmaps(side)
    code, first = side.get(CONFIGMAPS, limit=2)
    token = first["metadata"].get("continue")
    _code, second = side.get(CONFIGMAPS, limit=2, **{"continue": token})
    return (
        code,
        _names((200, first)),
        bool(token),
        _names((200, second)),
        bool(second["metadata"].get("continue")),
        "remainingItemCount" in first["metadata"],
        first["metadata"].get("remainingItemCount"),
    )


@case("selectors")
def case_kubectl_get_selector(side: Side) -> Any:
    """kubectl get -l with -o name."""
    _three_configmaps(side)
    return side.kubectl("get", "configmaps", "-l", "tier=web", "-o", "name")


# ------------------------------------------------------------------------ workloads


@case("workloads")
def case_deployment_makes_replicaset_and_pods(side: Side) -> Any:
    """A Deployment owns a ReplicaSet that owns its pods."""
    _created(side, DEPLOYMENTS, deployment(replicas=2))
    side.wait_rollout("web")
    _code, rs = side.get("/apis/apps/v1/namespaces/{ns}/replicasets")
    _code, pods = side.get(PODS)
    return (
        [(o["kind"], o["name"]) for r in rs["items"] for o in r["metadata"]["ownerReferences"]],
        sorted(o["kind"] for p in pods["items"] for o in p["metadata"].get("ownerReferences", [])),
    )


@case("workloads")
def case_kubectl_scale(side: Side) -> Any:
    """kubectl scale, then the Deployment's replicas and ready count."""
    _created(side, DEPLOYMENTS, deployment())
    side.wait_rollout("web")
    scaled = side.kubectl("scale", "deployment/web", "--replicas=3")
    side.wait_rollout("web")
    _code, body = side.get(f"{DEPLOYMENTS}/web")
    return scaled, body["spec"]["replicas"], body["status"].get("readyReplicas")


@case("rollout")
def case_rollout_status(side: Side) -> Any:
    """kubectl rollout status of a finished rollout."""
    _created(side, DEPLOYMENTS, deployment())
    side.wait_rollout("web")
    return side.kubectl("rollout", "status", "deployment/web", "--timeout=20s")


@case("rollout")
def case_rollout_history(side: Side) -> Any:
    """kubectl rollout history after two revisions."""
    _created(side, DEPLOYMENTS, deployment())
    side.wait_rollout("web")
    side.kubectl("set", "image", "deployment/web", "web=example.test/web:2")
    side.wait_rollout("web")
    return side.kubectl("rollout", "history", "deployment/web")


@case("rollout")
def case_rollout_undo(side: Side) -> Any:
    """kubectl rollout undo brings the previous image back."""
    _created(side, DEPLOYMENTS, deployment())
    side.wait_rollout("web")
    side.kubectl("set", "image", "deployment/web", "web=example.test/web:2")
    side.wait_rollout("web")
    undo = side.kubectl("rollout", "undo", "deployment/web")
    side.wait_rollout("web")
    body = side.get(f"{DEPLOYMENTS}/web")[1]
    return undo, body["spec"]["template"]["spec"]["containers"][0]["image"]


@case("rollout")
def case_rollout_restart(side: Side) -> Any:
    """kubectl rollout restart stamps the template and rolls the pods."""
    _created(side, DEPLOYMENTS, deployment())
    side.wait_rollout("web")
    restart = side.kubectl("rollout", "restart", "deployment/web")
    side.wait_rollout("web")
    body = side.get(f"{DEPLOYMENTS}/web")[1]
    annotations = body["spec"]["template"]["metadata"].get("annotations") or {}
    return restart, sorted(annotations), body["metadata"]["generation"]


# ------------------------------------------------------------------------ delete


@case("delete")
def case_delete_answer(side: Side) -> Any:
    """DELETE of a ConfigMap: 200 and the Status (or object) answered."""
    _created(side, CONFIGMAPS, configmap())
    code, body = side.http("DELETE", f"{CONFIGMAPS}/settings")
    return code, (body or {}).get("kind"), (body or {}).get("status")


@case("delete")
def case_finalizer_holds_an_object(side: Side) -> Any:
    """A ConfigMap with a finalizer stays, with a deletionTimestamp, until it is removed."""
    cm = configmap()
    cm["metadata"]["finalizers"] = ["kubelab.test/hold"]
    _created(side, CONFIGMAPS, cm)
    side.http("DELETE", f"{CONFIGMAPS}/settings")
    code, held = side.get(f"{CONFIGMAPS}/settings")
    marked = "deletionTimestamp" in held.get("metadata", {})
    side.http(
        "PATCH",
        f"{CONFIGMAPS}/settings",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    gone = side.get(f"{CONFIGMAPS}/settings")[0]
    return code, marked, gone


@case("delete")
def case_orphan_cascade_keeps_pods(side: Side) -> Any:
    """kubectl delete --cascade=orphan of a Deployment leaves its ReplicaSet's pods."""
    _created(side, DEPLOYMENTS, deployment(replicas=2))
    side.wait_rollout("web")
    result = side.kubectl("delete", "deployment/web", "--cascade=orphan")
    side.wait("the Deployment gone", lambda: side.get(f"{DEPLOYMENTS}/web")[0] == 404)
    time_pods = side.get(PODS)[1]
    return result, len(time_pods["items"])


@case("delete")
def case_kubectl_delete_missing(side: Side) -> Any:
    """kubectl delete of a missing object, with and without --ignore-not-found."""
    return side.kubectl("delete", "configmap", "nope"), side.kubectl(
        "delete", "configmap", "nope", "--ignore-not-found"
    )


# ------------------------------------------------------------------------ exec and logs


@case("exec-logs")
def case_exec_without_container_on_two(side: Side) -> Any:
    """pods/exec without a container on a two-container pod: 400 naming the choices."""
    _created(side, PODS, pod(containers=("app", "istio-proxy")))
    _wait_pod_running(side, "box")
    return status_shape(
        side.http("POST", f"{PODS}/box/exec", query={"command": "true", "stdout": "true"})
    )


@case("exec-logs")
def case_logs_without_container_on_two(side: Side) -> Any:
    """pods/log without a container on a two-container pod: 400 naming the choices."""
    _created(side, PODS, pod(containers=("app", "istio-proxy")))
    _wait_pod_running(side, "box")
    return status_shape(side.get(f"{PODS}/box/log"))


@case("exec-logs")
def case_exec_unknown_container(side: Side) -> Any:
    """pods/exec naming a container the pod does not have: 400."""
    _created(side, PODS, pod(containers=("app", "istio-proxy")))
    _wait_pod_running(side, "box")
    return status_shape(
        side.http(
            "POST",
            f"{PODS}/box/exec",
            query={"command": "true", "stdout": "true", "container": "nope"},
        )
    )


@case("exec-logs")
def case_logs_of_missing_pod(side: Side) -> Any:
    """kubectl logs of a pod that does not exist."""
    return side.kubectl("logs", "nope")


# ------------------------------------------------------------------------ APIs


@case("apis")
def case_auth_can_i(side: Side) -> Any:
    """kubectl auth can-i as the admin."""
    return side.kubectl("auth", "can-i", "create", "deployments"), side.kubectl(
        "auth", "can-i", "get", "virtualservices.networking.istio.io"
    )


@case("apis")
def case_get_crd(side: Side) -> Any:
    """The VirtualService CRD is readable."""
    code, body = side.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/virtualservices.networking.istio.io"
    )
    return code, (body or {}).get("spec", {}).get("names", {}).get("kind")


@case("apis")
def case_events_k8s_io(side: Side) -> Any:
    """events.k8s.io/v1 events can be listed."""
    code, body = side.get("/apis/events.k8s.io/v1/namespaces/{ns}/events")
    return code, (body or {}).get("kind")


@case("apis")
def case_explain_deployment(side: Side) -> Any:
    """kubectl explain deployment.spec.replicas: the field, its type and description.

    kubectl prints a v1.20 server's OpenAPI v2 and a v1.31 server's v3 in two layouts;
    compared is what they say."""
    return _explained(side, "deployment.spec.replicas")


@case("apis")
def case_explain_virtualservice(side: Side) -> Any:
    """kubectl explain of a lesson's kind (a VirtualService's route weight)."""
    return _explained(side, "virtualservice.spec.http.route.weight")


@case("apis")
def case_service_proxy_errors(side: Side) -> Any:
    """services/NAME:PORT/proxy to a Service that does not exist, to one without a selector
    and to one whose selector matches no pod (the sandbox proxies only its telemetry
    stand-ins): the API server's own 404 and 503 Status answers."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]},  # no selector: no endpoints
    }
    _created(side, SERVICES, service)
    selected = copy.deepcopy(service)
    selected["metadata"]["name"] = "app"
    selected["spec"]["selector"] = {"app": "nothing-runs-this"}  # an Endpoints, empty
    _created(side, SERVICES, selected)
    return (
        status_shape(side.get(f"{SERVICES}/nope:80/proxy/")),
        status_shape(side.get(f"{SERVICES}/web:80/proxy/api/v1/query")),
        status_shape(side.get(f"{SERVICES}/app:80/proxy/api/v1/query")),
    )


def _explained(side: Side, field: str) -> Any:
    rc, out, _err = side.kubectl("explain", field)
    found = re.search(r"^FIELD:\s+(\S+)\s+<(\S+)>", out, re.M)
    description = out.split("DESCRIPTION:", 1)[-1].split("FIELDS:", 1)[0]
    return rc, found.groups() if found else None, " ".join(description.split())


# ------------------------------------------------------------------------ edit, watch, more deletes


@case("patches")
def case_kubectl_edit(side: Side) -> Any:
    """kubectl edit with an editor that changes a value (EDITOR is a sed command)."""
    _created(side, CONFIGMAPS, configmap())
    result = side.kubectl(
        "edit", "configmap", "settings", env={"EDITOR": "sed -i s/mode:\\ a/mode:\\ b/"}
    )
    return result, side.get(f"{CONFIGMAPS}/settings")[1].get("data")


@case("watch")
def case_watch_sees_add_modify_delete(side: Side) -> Any:
    """A watch from a list's resourceVersion sees ADDED, MODIFIED and DELETED in order."""
    import threading

    from kubernetes import client, watch

    _code, listed = side.get(CONFIGMAPS, labelSelector="watched=yes")
    version = listed["metadata"]["resourceVersion"]
    core = client.CoreV1Api(side.client)
    seen: list[tuple[str, str, Any]] = []

    def follow() -> None:
        for event in watch.Watch().stream(
            core.list_namespaced_config_map,
            side.ns,
            label_selector="watched=yes",
            resource_version=version,
            timeout_seconds=4,
        ):
            seen.append((event["type"], event["object"].metadata.name, event["object"].data))
            if event["type"] == "DELETED":
                return

    watcher = threading.Thread(target=follow)
    watcher.start()
    cm = configmap("w")
    cm["metadata"]["labels"] = {"watched": "yes"}
    _created(side, CONFIGMAPS, cm)
    side.http(
        "PATCH",
        f"{CONFIGMAPS}/w",
        {"data": {"mode": "b"}},
        content_type="application/merge-patch+json",
    )
    side.http("DELETE", f"{CONFIGMAPS}/w")
    watcher.join(10)
    return seen


@case("delete")
def case_foreground_deletion(side: Side) -> Any:
    """DELETE with propagationPolicy Foreground: the owner answers marked, then goes."""
    _created(side, DEPLOYMENTS, deployment())
    side.wait_rollout("web")
    code, body = side.http(
        "DELETE",
        f"{DEPLOYMENTS}/web",
        {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"},
    )
    meta = (body or {}).get("metadata") or {}
    side.wait("the Deployment gone", lambda: side.get(f"{DEPLOYMENTS}/web")[0] == 404)
    side.wait(
        "its ReplicaSets gone",
        lambda: side.get("/apis/apps/v1/namespaces/{ns}/replicasets")[1]["items"] == [],
    )
    return code, (body or {}).get("kind"), meta.get("finalizers"), "deletionTimestamp" in meta


@case("delete")
def case_namespace_deletion(side: Side) -> Any:
    """Deleting a namespace: Terminating first, then gone with its content."""
    _created(side, CONFIGMAPS, configmap())
    code, body = side.http("DELETE", "/api/v1/namespaces/{ns}")
    phase = ((body or {}).get("status") or {}).get("phase")
    side.wait(
        "the namespace gone",
        lambda: side.get("/api/v1/namespaces/{ns}")[0] == 404,
        timeout=60,
    )
    return code, phase, (body or {}).get("spec")


# ------------------------------------------------------------------------ RBAC (the class Role)


def _student(side: Side) -> Side:
    """The class's identity in this namespace (kubelab.classroom.access), and the side as
    that ServiceAccount's token sees it."""
    from kubelab.classroom.access import IDENTITY, student_rules

    rules = student_rules(["istio"], [_virtual_service(), deployment()])
    ns = side.ns
    meta = {"name": IDENTITY, "namespace": ns}
    _created(side, "/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": meta})
    roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"
    _created(side, roles, {"metadata": meta, "rules": rules})
    binding = {
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": IDENTITY},
        "subjects": [{"kind": "ServiceAccount", "name": IDENTITY, "namespace": ns}],
    }
    _created(side, "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", binding)
    code, answer = side.post(
        f"/api/v1/namespaces/{{ns}}/serviceaccounts/{IDENTITY}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    assert code == 201, f"{side.name}: TokenRequest: {code} {answer}"
    student = side.as_token(answer["status"]["token"])
    student.wait("the token to work", lambda: student.get(PODS)[0] != 401, timeout=15)
    return student


@case("rbac")
def case_student_reads_own_namespace(side: Side) -> Any:
    """The class Role reads pods and VirtualServices of its namespace."""
    _created(side, VIRTUALSERVICES, _virtual_service())
    student = _student(side)
    return student.get(PODS)[0], _names(student.get(VIRTUALSERVICES))


@case("rbac")
def case_student_cannot_read_secrets(side: Side) -> Any:
    """Secrets are never granted: 403 with the server's message."""
    student = _student(side)
    return status_shape(student.get("/api/v1/namespaces/{ns}/secrets"))


@case("rbac")
def case_student_cannot_leave_namespace(side: Side) -> Any:
    """Another namespace's pods: 403."""
    student = _student(side)
    return status_shape(student.get("/api/v1/namespaces/default/pods"))


@case("rbac")
def case_student_cannot_list_namespaces(side: Side) -> Any:
    """The cluster scope: 403."""
    student = _student(side)
    return status_shape(student.get("/api/v1/namespaces"))


@case("rbac")
def case_student_patches_virtualservice_but_not_creates_deployment(side: Side) -> Any:
    """The course's weight patch is allowed; creating a Deployment is not."""
    _created(side, VIRTUALSERVICES, _virtual_service())
    student = _student(side)
    patched = student.http(
        "PATCH",
        f"{VIRTUALSERVICES}/app",
        {"spec": {"hosts": ["app", "app.example"]}},
        content_type="application/merge-patch+json",
    )[0]
    return patched, status_shape(student.post(DEPLOYMENTS, deployment()))


@case("rbac")
def case_student_auth_can_i(side: Side) -> Any:
    """kubectl auth can-i as the student: what the Role says."""
    student = _student(side)
    return [
        student.kubectl("auth", "can-i", *question)[:2]
        for question in (
            ("get", "pods"),
            ("list", "secrets"),
            ("patch", "virtualservices.networking.istio.io"),
            ("create", "deployments"),
            ("create", "pods", "--subresource=exec"),
            ("delete", "pods"),
            ("get", "pods", "-n", "default"),
        )
    ]


@case("rbac")
def case_student_kubectl_forbidden_message(side: Side) -> Any:
    """kubectl get secrets as the student: exit 1 and the server's 403 message."""
    student = _student(side)
    return student.kubectl("get", "secrets")
