"""The ``assert`` and ``absent`` checks on the real kube-apiserver, through the real ``Kube``
client: the object as the server keeps it (defaults added, fields the tree does not name),
before and after a student's ``kubectl`` changes it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from kubelab.checks.registry import CheckContext
from kubelab.checks.result import CheckResult, Status
from kubelab.checks.runner import run_check
from kubelab.checks.types import CHECK_TYPES
from kubelab.cluster.kube import Kube

pytestmark = pytest.mark.timeout(120)


def _deployment(namespace: str) -> dict[str, Any]:
    labels = {"app": "app-backend"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app-backend", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 0,  # no pods: what is checked is the object
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app-backend",
                            "image": "app-backend:v2",
                            "env": [
                                {"name": "LOG_LEVEL", "value": "INFO"},
                                {"name": "BUG_AFTER", "value": "40"},
                            ],
                        }
                    ]
                },
            },
        },
    }


def _check(kube: Kube, namespace: str, **params: Any) -> CheckResult:
    params = {"api_version": "apps/v1", "kind": "Deployment", "namespace": namespace, **params}
    spec = msgspec.convert(params, CHECK_TYPES[params["type"]])
    return run_check(spec, CheckContext(kube=kube, sampler=lambda spec: None))  # type: ignore[arg-type]


POOL_50 = {
    "spec": {
        "(replicas)": 0,
        "template": {
            "spec": {
                "containers": [
                    {"name": "app-backend", "env": [{"name": "BUG_AFTER", "value": "50"}]}
                ]
            }
        },
    }
}


def test_assert_fails_until_the_object_is_changed_then_passes(
    control_plane: Any, namespace: str
) -> None:
    kube = control_plane.kube()
    kube.apply(_deployment(namespace))
    where = f"Deployment {namespace}/app-backend"

    before = _check(kube, namespace, type="assert", name="app-backend", object=POOL_50)
    assert before.status is Status.FAILED, before
    assert before.message == (
        f"{where}: spec.template.spec.containers: no element matches {{name: app-backend, "
        'env: [{name: BUG_AFTER, value: "50"}]}; closest containers[0]: env: no element '
        'matches {name: BUG_AFTER, value: "50"}; closest env[1]: value is "40", expected "50"'
    )
    # The server's defaults are in the live object; the tree does not name them.
    live = kube.get("apps/v1", "Deployment", "app-backend", namespace)
    assert live is not None and live["spec"]["strategy"]["type"] == "RollingUpdate"

    # What the lesson tells the student to run.
    control_plane.kubectl("set", "env", "deployment/app-backend", "-n", namespace, "BUG_AFTER=50")
    after = _check(kube, namespace, type="assert", name="app-backend", object=POOL_50)
    assert after.status is Status.PASSED, after
    by_label = _check(kube, namespace, type="assert", selector="app=app-backend", object=POOL_50)
    assert by_label.status is Status.PASSED, by_label
    assert by_label.message == (
        f"Deployment with labels app=app-backend in {namespace}: 1 of 1 match (app-backend)"
    )

    # And back: a JSON patch of the field fails the check again, with the new value.
    control_plane.kubectl(
        "patch",
        "deployment",
        "app-backend",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/template/spec/containers/0/env/1/value","value":"60"}]',
    )
    patched = _check(kube, namespace, type="assert", name="app-backend", object=POOL_50)
    assert patched.status is Status.FAILED, patched
    assert patched.message.endswith('closest env[1]: value is "60", expected "50"'), patched


def test_absent_on_the_real_server(control_plane: Any, namespace: str) -> None:
    kube = control_plane.kube()
    missing = _check(kube, namespace, type="absent", name="app-backend")
    assert (missing.status, missing.message) == (
        Status.PASSED,
        f"Deployment {namespace}/app-backend does not exist",
    )
    kube.apply(_deployment(namespace))
    tree = {"spec": {"template": {"spec": {"containers": [{"image": "app-backend:v2"}]}}}}
    found = _check(kube, namespace, type="absent", selector="app=app-backend", object=tree)
    assert found.status is Status.FAILED, found
    assert found.message == (
        f"Deployment with labels app=app-backend in {namespace}: 1 of 1 match (app-backend); "
        'app-backend has {spec: {template: {spec: {containers: [{image: "app-backend:v2"}]}}}}'
    )
