"""The sandbox's decoding and validation (kubelab.sandbox.admission) through its store.

The answers themselves are compared with the real kube-apiserver's by the fidelity
suite (tests/realk8s/test_fidelity_real.py); these tests pin the store's side of it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubelab.sandbox import resources
from kubelab.sandbox.errors import ApiError
from kubelab.sandbox.store import Store

DEPLOYMENTS = resources.by_kind("apps/v1", "Deployment")
VIRTUALSERVICES = resources.by_kind("networking.istio.io/v1", "VirtualService")
CONFIGMAPS = resources.CONFIGMAPS

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]},
        },
    },
}


def deployment(**container: Any) -> dict[str, Any]:
    obj = copy.deepcopy(DEPLOYMENT)
    obj["spec"]["template"]["spec"]["containers"][0].update(container)
    return obj


ROUTE = [{"destination": {"host": "app"}}]


def refused(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def test_an_unknown_field_is_dropped_by_default_and_refused_when_strict() -> None:
    store = Store()
    stored = store.create(DEPLOYMENTS, deployment(imagePullPolicyy="Always"))
    assert "imagePullPolicyy" not in stored["spec"]["template"]["spec"]["containers"][0]
    error = refused(
        lambda: store.create(
            DEPLOYMENTS,
            {**deployment(imagePullPolicyy="Always"), "metadata": {"name": "w2"}},
            field_validation="Strict",
        )
    )
    assert (error.code, error.reason) == (400, "BadRequest")
    assert 'unknown field "spec.template.spec.containers[0].imagePullPolicyy"' in error.message
    assert not store.exists(DEPLOYMENTS, "default", "w2")


def test_a_custom_resource_is_pruned_to_its_schema() -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {"hosts": ["app"], "colour": "blue", "http": [{"retriesz": {}, "route": ROUTE}]},
    }
    stored = Store().create(VIRTUALSERVICES, vs)
    assert stored["spec"] == {"hosts": ["app"], "http": [{"route": ROUTE}]}


def test_a_wrong_type_is_a_decode_error() -> None:
    obj = copy.deepcopy(DEPLOYMENT)
    obj["spec"]["replicas"] = "three"
    error = refused(lambda: Store().create(DEPLOYMENTS, obj))
    assert (error.code, error.reason) == (400, "BadRequest")
    assert error.message.startswith('Deployment in version "v1" cannot be handled as a Deployment')


@pytest.mark.parametrize(
    ("change", "field", "reason", "message"),
    [
        (
            {"imagePullPolicy": "Sometimes"},
            "spec.template.spec.containers[0].imagePullPolicy",
            "FieldValueNotSupported",
            'Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never"',
        ),
        (
            {"ports": [{"containerPort": 70000}]},
            "spec.template.spec.containers[0].ports[0].containerPort",
            "FieldValueInvalid",
            "Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            {"image": ""},
            "spec.template.spec.containers[0].image",
            "FieldValueRequired",
            "Required value",
        ),
    ],
)
def test_container_rules_answer_with_their_field(
    change: dict[str, Any], field: str, reason: str, message: str
) -> None:
    error = refused(lambda: Store().create(DEPLOYMENTS, deployment(**change)))
    assert error.code == 422
    assert error.details is not None
    assert error.details["causes"] == [{"reason": reason, "message": message, "field": field}]
    assert error.message == f'Deployment.apps "web" is invalid: {field}: {message}'


def test_a_deployment_without_selector_has_both_causes() -> None:
    obj = copy.deepcopy(DEPLOYMENT)
    del obj["spec"]["selector"]
    error = refused(lambda: Store().create(DEPLOYMENTS, obj))
    assert error.details is not None
    assert [c["field"] for c in error.details["causes"]] == [
        "spec.selector",
        "spec.template.metadata.labels",
    ]
    assert 'map[string]string{"app":"web"}: `selector` does not match' in error.message


def test_duplicate_container_names_and_bad_labels_are_refused() -> None:
    obj = copy.deepcopy(DEPLOYMENT)
    obj["spec"]["template"]["spec"]["containers"].append({"name": "web", "image": "x"})
    error = refused(lambda: Store().create(DEPLOYMENTS, obj))
    assert 'spec.template.spec.containers[1].name: Duplicate value: "web"' in error.message
    cm = {"metadata": {"name": "c", "namespace": "default", "labels": {"tier": "a b"}}}
    error = refused(lambda: Store().create(CONFIGMAPS, cm))
    assert error.message.startswith(
        'ConfigMap "c" is invalid: metadata.labels: Invalid value: "a b"'
    )
    # Core kinds' details carry no group, as kube-apiserver's (omitempty).
    assert error.details is not None and "group" not in error.details


def test_a_new_namespace_gets_its_service_account_and_root_ca() -> None:
    store = Store()
    store.set_root_ca("-----BEGIN CERTIFICATE-----\n")
    store.create(resources.NAMESPACES, {"metadata": {"name": "team"}})
    assert store.exists(resources.SERVICEACCOUNTS, "team", "default")
    root = store.get(CONFIGMAPS, "team", "kube-root-ca.crt")
    assert root["data"] == {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}
    assert store.exists(CONFIGMAPS, "default", "kube-root-ca.crt")  # earlier namespaces too


def test_a_finalizer_holds_an_object_until_it_is_removed() -> None:
    store = Store()
    cm = {"metadata": {"name": "c", "namespace": "default", "finalizers": ["x/hold"]}}
    store.create(CONFIGMAPS, cm)
    held = store.delete(CONFIGMAPS, "default", "c")
    assert held["metadata"]["deletionTimestamp"]
    assert store.exists(CONFIGMAPS, "default", "c")
    store.patch(CONFIGMAPS, "default", "c", "merge", {"metadata": {"finalizers": None}})
    assert not store.exists(CONFIGMAPS, "default", "c")


def test_an_unsupported_field_selector_is_a_400() -> None:
    error = refused(lambda: Store().list(resources.PODS, "default", field_selector="spec.foo=1"))
    assert (error.code, error.message) == (400, "field label not supported: spec.foo")


def _weighted(*weights: int) -> dict[str, Any]:
    route = [
        {"destination": {"host": "app", "subset": f"v{i}"}, "weight": w}
        for i, w in enumerate(weights)
    ]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {"hosts": ["app"], "http": [{"route": route}]},
    }


@pytest.mark.parametrize(
    ("weights", "said"),
    [
        ((150, -50), "configuration is invalid: weight -50 < 0"),
        ((0, 0), "configuration is invalid: total destination weight = 0"),
        (  # both rules at once, as istiod checks them
            (-1, 1),
            "configuration is invalid: 2 errors occurred:\n\t* weight -1 < 0\n\t"
            "* total destination weight = 0\n\n",
        ),
        (
            (-1, 0, 1, -3),
            "configuration is invalid: 2 errors occurred:\n\t* weight -1 < 0\n\t"
            "* weight -3 < 0\n\n",
        ),
    ],
)
def test_istiod_refuses_negative_and_zero_weights(weights: tuple[int, ...], said: str) -> None:
    error = refused(lambda: Store().create(VIRTUALSERVICES, _weighted(*weights)))
    assert error.code == 400
    assert error.message == f'admission webhook "validation.istio.io" denied the request: {said}'
    assert "reason" not in error.status()


def test_istiod_admits_weights_that_do_not_add_up_to_100() -> None:
    stored = Store().create(VIRTUALSERVICES, _weighted(90, 20))
    assert [r["weight"] for r in stored["spec"]["http"][0]["route"]] == [90, 20]


DESTINATIONRULES = resources.DESTINATIONRULES


def _rule(host: str, *subsets: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {
            "host": host,
            "subsets": [{"name": s, "labels": {"version": s}} for s in subsets],
        },
    }


@pytest.mark.parametrize(
    ("obj", "said"),
    [
        (_rule("app", "v1", "v1"), "duplicate subset names: v1"),
        (_rule("app", "V_1"), "subset name is invalid: V_1"),
        (_rule("", "v1"), "empty domain name not allowed"),
    ],
    ids=["duplicate-subset", "bad-subset-name", "no-host"],
)
def test_istiod_refuses_a_broken_destination_rule(obj: dict[str, Any], said: str) -> None:
    error = refused(lambda: Store().create(DESTINATIONRULES, obj))
    assert error.code == 400
    assert error.message.endswith(f"configuration is invalid: {said}")


def test_istiod_refuses_an_http_route_without_destination_or_a_bad_subset() -> None:
    empty = _weighted()
    empty["spec"]["http"] = [{"match": [{"uri": {"prefix": "/"}}]}]
    error = refused(lambda: Store().create(VIRTUALSERVICES, empty))
    assert error.message.endswith("HTTP route, redirect or direct_response is required")
    bad = _weighted(100)
    bad["spec"]["http"][0]["route"][0]["destination"]["subset"] = "V1"
    error = refused(lambda: Store().create(VIRTUALSERVICES, bad))
    assert error.message.endswith("configuration is invalid: subset name is invalid: V1")
