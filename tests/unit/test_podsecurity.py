"""Pod Security baseline on rendered objects: what student namespaces enforce, checked before
anything reaches a cluster."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ROOT

from kubelab.errors import ValidationFailed
from kubelab.lessons.loader import load_lesson
from kubelab.lessons.plan import render
from kubelab.validation.podsecurity import baseline_problems

#: The tester pod as the app charts render it, with the sidecars istiod injects with Istio CNI.
CLEAN: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "curl-test", "annotations": {"prometheus.io/scrape": "true"}},
    "spec": {
        "initContainers": [
            {
                "name": "istio-validation",
                "image": "istio/proxyv2:1.30.3",
                "securityContext": {"capabilities": {"drop": ["ALL"]}, "runAsUser": 1337},
            }
        ],
        "containers": [
            {
                "name": "curl-test",
                "image": "curlimages/curl",
                "ports": [{"containerPort": 8080}],
                "securityContext": {
                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            },
            {"name": "istio-proxy", "image": "istio/proxyv2:1.30.3"},
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1 2"}]},
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    pod = copy.deepcopy(CLEAN)
    *parents, last = path.split(".")
    node: Any = pod
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[int(last) if last.isdigit() else last] = value
    return pod


CASES = [
    ("spec.hostNetwork", True, "spec.hostNetwork: host namespaces are not allowed"),
    ("spec.hostPID", True, "spec.hostPID: host namespaces are not allowed"),
    ("spec.hostIPC", True, "spec.hostIPC: host namespaces are not allowed"),
    (
        "spec.containers.0.securityContext.privileged",
        True,
        "spec.containers[0].securityContext.privileged: must not be true",
    ),
    (
        "spec.initContainers.0.securityContext.capabilities",
        {"add": ["NET_ADMIN", "NET_RAW"]},  # istio-init without Istio CNI
        "spec.initContainers[0].securityContext.capabilities.add: NET_ADMIN, NET_RAW not allowed",
    ),
    (
        "spec.volumes.0",
        {"name": "root", "hostPath": {"path": "/"}},
        "spec.volumes[0].hostPath: hostPath volumes are not allowed",
    ),
    (
        "spec.containers.0.ports.0.hostPort",
        8080,
        "spec.containers[0].ports[0].hostPort: host ports are not allowed",
    ),
    (
        "spec.containers.0.securityContext.procMount",
        "Unmasked",
        "spec.containers[0].securityContext.procMount: must be Default",
    ),
    (
        "spec.securityContext.seccompProfile",
        {"type": "Unconfined"},
        "spec.securityContext.seccompProfile.type: must not be Unconfined",
    ),
    (
        "spec.containers.1.securityContext",
        {"appArmorProfile": {"type": "Unconfined"}},
        "spec.containers[1].securityContext.appArmorProfile.type: must not be Unconfined",
    ),
    (
        "spec.securityContext.seLinuxOptions",
        {"type": "spc_t"},
        "spec.securityContext.seLinuxOptions.type: 'spc_t' is not allowed",
    ),
    (
        "spec.containers.0.securityContext.seLinuxOptions",
        {"user": "system_u"},
        "spec.containers[0].securityContext.seLinuxOptions.user: must not be set",
    ),
    (
        "spec.securityContext.sysctls",
        [{"name": "kernel.msgmax", "value": "1"}],
        "spec.securityContext.sysctls: 'kernel.msgmax' is not a safe sysctl",
    ),
    (
        "spec.securityContext.windowsOptions",
        {"hostProcess": True},
        "spec.securityContext.windowsOptions.hostProcess: must not be true",
    ),
    (
        "metadata.annotations.container.apparmor.security.beta.kubernetes.io/curl-test",
        "unconfined",
        "metadata.annotations[container.apparmor.security.beta.kubernetes.io/curl-test]: "
        "'unconfined' is not allowed",
    ),
]


def test_a_pod_with_injected_sidecars_and_the_default_set_passes():
    assert baseline_problems(CLEAN) == []


@pytest.mark.parametrize(("path", "value", "message"), CASES, ids=[c[0] for c in CASES])
def test_each_baseline_control_is_refused_with_its_field(path, value, message):
    if path.startswith("metadata.annotations."):
        pod = copy.deepcopy(CLEAN)
        pod["metadata"]["annotations"][path.removeprefix("metadata.annotations.")] = value
    else:
        pod = _with(path, value)
    assert baseline_problems(pod) == [message]


@pytest.mark.parametrize(
    ("kind", "nest"),
    [
        ("Deployment", lambda t: {"spec": {"template": t}}),
        ("StatefulSet", lambda t: {"spec": {"template": t}}),
        ("Job", lambda t: {"spec": {"template": t}}),
        ("CronJob", lambda t: {"spec": {"jobTemplate": {"spec": {"template": t}}}}),
        ("Rollout", lambda t: {"spec": {"template": t}}),
    ],
)
def test_pod_templates_of_every_workload_kind_are_checked(kind, nest):
    template = {"metadata": {}, "spec": {"hostNetwork": True, "containers": []}}
    obj = {"kind": kind, **nest(template)}
    [problem] = baseline_problems(obj)
    assert problem.endswith("template.spec.hostNetwork: host namespaces are not allowed")


def test_an_analysis_templates_job_pods_are_checked():
    job = {"spec": {"template": {"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}}}
    analysis = {"kind": "AnalysisTemplate", "spec": {"metrics": [{"provider": {"job": job}}]}}
    assert baseline_problems(analysis) == [
        "spec.metrics[0].provider.job.spec.template.spec.volumes[0].hostPath: "
        "hostPath volumes are not allowed"
    ]


@pytest.mark.parametrize("obj", [{"kind": "Service", "spec": {}}, "text", {"kind": "Pod"}, {}])
def test_objects_without_pods_have_no_problems(obj):
    assert baseline_problems(obj) == []


def test_a_lesson_deploying_a_privileged_pod_does_not_render(tmp_path: Path):
    """The lesson author learns at `validate --render`, with the file and the field, what a
    class namespace would refuse only when the pod is created."""
    folder = tmp_path / "istio-traffic-splitting"
    shutil.copytree(ROOT / "labs" / "istio-traffic-splitting", folder)
    (folder / "debug.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "debug", "namespace": "istio"},
                "spec": {
                    "hostPID": True,
                    "containers": [
                        {
                            "name": "debug",
                            "image": "busybox",
                            "securityContext": {"privileged": True},
                        }
                    ],
                },
            }
        )
    )
    with (folder / "lesson.yaml").open("a", encoding="utf-8") as lesson:
        lesson.write("\nmanifests:\n  - debug.yaml\n")
    with pytest.raises(ValidationFailed) as failed:
        render(load_lesson(folder / "lesson.yaml"))
    assert failed.value.details == [
        "istio/pod-debug.yaml: Pod/debug spec.hostPID: host namespaces are not allowed "
        "(Pod Security baseline)",
        "istio/pod-debug.yaml: Pod/debug spec.containers[0].securityContext.privileged: "
        "must not be true (Pod Security baseline)",
    ]
    assert "student namespaces enforce" in (failed.value.hint or "")


def test_every_bundled_lesson_renders_pods_that_meet_baseline():
    for lesson in sorted((ROOT / "labs").glob("*/lesson.yaml")):
        rendered = render(load_lesson(lesson))  # raises on any problem
        kinds = {o.obj["kind"] for o in rendered.objects}
        assert kinds & {"Deployment", "Rollout", "Pod"}, lesson  # there were pods to check
        # Made privileged, the same objects fail: the check saw them.
        broken = [
            _with_privileged_app(o.obj) for o in rendered.objects if o.obj["kind"] == "Deployment"
        ]
        assert all(baseline_problems(b) for b in broken), lesson


def _with_privileged_app(obj: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    changed["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    return changed
