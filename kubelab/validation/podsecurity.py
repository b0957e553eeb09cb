"""The Pod Security ``baseline`` level, checked on rendered objects before they reach a cluster.

Student namespaces enforce ``baseline`` (``kubelab.classroom.access.POD_SECURITY``): a pod
that breaks it is refused by the API server when its controller creates it, and a student
would find a Deployment with no pods and an event few read. Rendering checks the pods a
lesson deploys instead, with the object and field named.

The controls are those of the Pod Security Standards' baseline level as the API server's
PodSecurity admission checks them (``k8s.io/pod-security-admission/policy``): host
namespaces, privileged containers, added capabilities, hostPath volumes, host ports,
AppArmor, SELinux, ``/proc`` mount, seccomp, sysctls and Windows host processes. Where a
later Kubernetes version allows more (a few sysctls since 1.27/1.29, the SELinux type
``container_engine_t`` since 1.31) the older, smaller set is used: a lesson that passes runs
on every server that enforces Pod Security.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kubelab.k8s.objects import dig

#: Where each kind keeps its pod template (a Pod is its own).
_POD_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Rollout": ("spec", "template"),  # Argo Rollouts
    "PodTemplate": ("template",),
}

#: Capabilities a container may add under baseline (the container runtime's default set).
ALLOWED_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    }
)
ALLOWED_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        items = spec.get(field)
        for i, container in enumerate(items if isinstance(items, list) else []):
            if isinstance(container, Mapping):
                yield f"spec.{field}[{i}]", container


def _security_context_problems(where: str, context: Mapping[str, Any]) -> Iterator[str]:
    """The controls a pod and a container security context share."""
    if _mapping(context.get("windowsOptions")).get("hostProcess") is True:
        yield f"{where}.windowsOptions.hostProcess: must not be true"
    selinux = _mapping(context.get("seLinuxOptions"))
    if str(selinux.get("type") or "") not in ALLOWED_SELINUX_TYPES:
        yield f"{where}.seLinuxOptions.type: {selinux['type']!r} is not allowed"
    for field in ("user", "role"):
        if selinux.get(field):
            yield f"{where}.seLinuxOptions.{field}: must not be set"
    if _mapping(context.get("seccompProfile")).get("type") == "Unconfined":
        yield f"{where}.seccompProfile.type: must not be Unconfined"
    apparmor = _mapping(context.get("appArmorProfile")).get("type")
    if apparmor == "Unconfined":
        yield f"{where}.appArmorProfile.type: must not be Unconfined"


def pod_problems(template: Mapping[str, Any], where: str = "") -> list[str]:
    """What in a pod (or pod template: ``metadata`` and ``spec``) breaks baseline, each as
    ``field: reason`` with the field path prefixed by ``where``."""
    spec = _mapping(template.get("spec"))
    prefix = f"{where}." if where else ""
    problems: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field) is True:
            problems.append(f"{prefix}spec.{field}: host namespaces are not allowed")
    pod_context = _mapping(spec.get("securityContext"))
    problems += _security_context_problems(f"{prefix}spec.securityContext", pod_context)
    for sysctl in pod_context.get("sysctls") or []:
        name = _mapping(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            problems.append(f"{prefix}spec.securityContext.sysctls: {name!r} is not a safe sysctl")
    volumes = spec.get("volumes")
    for i, volume in enumerate(volumes if isinstance(volumes, list) else []):
        if isinstance(volume, Mapping) and "hostPath" in volume:
            problems.append(f"{prefix}spec.volumes[{i}].hostPath: hostPath volumes are not allowed")
    for path, container in _containers(spec):
        at = f"{prefix}{path}"
        context = _mapping(container.get("securityContext"))
        if context.get("privileged") is True:
            problems.append(f"{at}.securityContext.privileged: must not be true")
        added = _mapping(context.get("capabilities")).get("add") or []
        extra = sorted(str(c) for c in added if str(c) not in ALLOWED_CAPABILITIES)
        if extra:
            problems.append(
                f"{at}.securityContext.capabilities.add: {', '.join(extra)} not allowed"
            )
        if context.get("procMount") not in (None, "Default"):
            problems.append(f"{at}.securityContext.procMount: must be Default")
        problems += _security_context_problems(f"{at}.securityContext", context)
        ports = container.get("ports")
        for j, port in enumerate(ports if isinstance(ports, list) else []):
            if _mapping(port).get("hostPort"):
                problems.append(f"{at}.ports[{j}].hostPort: host ports are not allowed")
    annotations = _mapping(_mapping(template.get("metadata")).get("annotations"))
    for key, value in annotations.items():
        if key.startswith(_APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or str(value).startswith("localhost/")
        ):
            problems.append(f"{prefix}metadata.annotations[{key}]: {value!r} is not allowed")
    return problems


def _analysis_jobs(obj: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The pod templates of an Argo Rollouts analysis's Job metrics."""
    metrics = dig(obj, "spec", "metrics")
    for i, metric in enumerate(metrics if isinstance(metrics, list) else []):
        template = dig(metric, "provider", "job", "spec", "template")
        if isinstance(template, Mapping):
            yield f"spec.metrics[{i}].provider.job.spec.template", template


def baseline_problems(obj: Any) -> list[str]:
    """What in ``obj``'s pods breaks baseline; [] for kinds without pods."""
    if not isinstance(obj, Mapping):
        return []
    kind = str(obj.get("kind"))
    if kind in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
        return [p for where, t in _analysis_jobs(obj) for p in pod_problems(t, where)]
    path = _POD_PATHS.get(kind)
    if path is None:
        return []
    template = obj if not path else dig(obj, *path)
    if not isinstance(template, Mapping):
        return []
    return pod_problems(template, ".".join(path))
