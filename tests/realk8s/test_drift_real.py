"""Drift on the real API server: what a student's kubectl or a controller changed in an
object kubelab applied, field by field, with the manager that changed it from the server's
own managedFields."""

from __future__ import annotations

import json

import pytest

from kubelab.cluster.drift import Drift

pytestmark = pytest.mark.timeout(120)


def deployment(name: str, namespace: str, image: str = "app-backend:v1") -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def test_kubectl_scale_and_patch_are_drift_named_by_their_manager(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    kube = control_plane.kube()
    kube.apply(deployment("web", namespace))
    assert kube.drift(deployment("web", namespace)) == []
    control_plane.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=3")
    control_plane.kubectl(
        "patch",
        "deployment",
        "web",
        "-n",
        namespace,
        "--type=json",
        '-p=[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"x:v2"}]',
    )
    drift = {d.where: d for d in kube.drift(deployment("web", namespace))}
    assert set(drift) == {"spec.replicas", "spec.template.spec.containers[0].image"}
    assert (drift["spec.replicas"].live, drift["spec.replicas"].lesson) == (3, 1)
    image = drift["spec.template.spec.containers[0].image"]
    assert (image.live, image.lesson) == ("x:v2", "app-backend:v1")
    assert image.managers == ("kubectl-patch",)
    # v1.20 records no manager for a write through the scale subresource (later servers
    # name kubectl); no manager is never taken for a controller.
    assert not drift["spec.replicas"].by_controller
    assert not image.by_controller
    # A new rendering of the lesson is no drift: apply brings the object up to date.
    assert kube.drift(deployment("web", namespace, image="app-backend:v3")) == []


def test_a_controllers_change_is_named_as_such(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    kube = control_plane.kube()
    kube.apply(deployment("canary", namespace))
    # What Flagger does to a Canary's target: scales it to zero (its own field manager).
    control_plane.kubectl(
        "patch",
        "deployment",
        "canary",
        "-n",
        namespace,
        "--field-manager=flagger",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"replicas": 0}}),
    )
    (drift,) = kube.drift(deployment("canary", namespace))
    assert isinstance(drift, Drift)
    assert drift.where == "spec.replicas" and drift.live == 0
    assert drift.managers == ("flagger",) and drift.by_controller
    assert drift.describe() == "spec.replicas is 0, the lesson has 1 (by flagger)"
