"""What kube-apiserver fills in on the objects people look at: the defaults of each kind,
and what admission adds to a new pod (its ServiceAccount, priority and tolerations)."""

from __future__ import annotations

import base64
from typing import Any

from kubelab.sandbox.resources import ResourceType


def _default_pod_spec(spec: Any, *, restart_policy: bool = True) -> None:
    if not isinstance(spec, dict):
        return
    if restart_policy:  # not for Jobs, which must say Never or OnFailure themselves
        spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or []:
            if not isinstance(container, dict):
                continue
            image = str(container.get("image", ""))
            tag = image.rsplit("/", 1)[-1]
            latest = ":" not in tag or tag.endswith(":latest")
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


# What the DefaultTolerationSeconds admission plugin adds to every pod.
_DEFAULT_TOLERATIONS = tuple(
    {
        "key": f"node.kubernetes.io/{taint}",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    for taint in ("not-ready", "unreachable")
)


def _admit_pod(spec: dict[str, Any]) -> None:
    """What admission adds to a new pod: its ServiceAccount, priority and tolerations."""
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = account
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    if isinstance(tolerations, list):
        present = {(t.get("key"), t.get("effect")) for t in tolerations if isinstance(t, dict)}
        for toleration in _DEFAULT_TOLERATIONS:
            if (toleration["key"], "NoExecute") not in present:
                tolerations.append(dict(toleration))


def _default_template(obj: dict[str, Any], *, restart_policy: bool = True) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("template"), dict):
        _default_pod_spec(spec["template"].get("spec"), restart_policy=restart_policy)


class Defaulter:
    """Fills the defaults the API server would, per kind (only the ones people look at)."""

    def __init__(self) -> None:
        self._next_ip = 1

    def __call__(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = obj.get("spec")
        kind = (rt.group, rt.kind)
        if kind == ("", "Namespace"):
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
            # The API server labels every namespace with its name (used by selectors).
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif kind == ("", "Pod"):
            _default_pod_spec(spec)
            if old is None and isinstance(spec, dict):
                _admit_pod(spec)
            if old is None:
                obj.setdefault("status", {}).setdefault("phase", "Pending")
        elif kind in (("apps", "Deployment"), ("apps", "ReplicaSet")) and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            if kind[1] == "Deployment":
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault("progressDeadlineSeconds", 600)
                strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
                if isinstance(strategy, dict) and strategy.get("type") == "RollingUpdate":
                    strategy.setdefault(
                        "rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"}
                    )
            _default_template(obj)
        elif kind == ("batch", "Job"):
            _default_template(obj, restart_policy=False)
        elif kind == ("argoproj.io", "Rollout"):
            _default_template(obj)
        elif kind == ("", "Service") and isinstance(spec, dict):
            self._default_service(spec, old)
        elif kind == ("", "Secret"):
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None)
            if isinstance(string_data, dict):
                data = obj.setdefault("data", {})
                for key, value in string_data.items():
                    data[key] = base64.b64encode(str(value).encode()).decode()

    def _default_service(self, spec: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        old_spec = (old or {}).get("spec") or {}
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            if old_spec.get("clusterIP"):
                # clusterIP is immutable; an update that omits it keeps the allocated one.
                spec["clusterIP"] = old_spec["clusterIP"]
            else:
                spec["clusterIP"] = f"10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}"
                self._next_ip += 1
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])
