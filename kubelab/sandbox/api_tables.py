"""``meta.k8s.io/v1`` Tables: what ``kubectl get`` prints, computed server-side.

kubectl asks for ``application/json;as=Table;g=meta.k8s.io`` and prints the columns
the server sends. The built-in kinds get the columns kube-apiserver's printers produce
(pods: NAME READY STATUS RESTARTS AGE, ...); custom resources get the
additionalPrinterColumns of their CRD (:attr:`ResourceType.printer_columns`), and
anything else NAME and AGE. Used by ``kubelab.sandbox.api`` for get, list and watch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubelab.sandbox.filters import label_selector_string
from kubelab.sandbox.resources import PrinterColumn, ResourceType

Column = dict[str, Any]
Cells = list[Any]


def human_duration(seconds: float) -> str:
    """``duration.HumanDuration`` of Kubernetes: 45s, 3m10s, 25m, 5h3m, 3d4h, 2y30d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    return human_duration((datetime.now(UTC) - when).total_seconds())


def _col(name: str, type_: str = "string", priority: int = 0) -> Column:
    return {"name": name, "type": type_, "format": "", "description": "", "priority": priority}


_NAME: Column = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE = _col("Age")


def _get(obj: Any, *path: str) -> Any:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _name(obj: dict[str, Any]) -> str:
    return str(_get(obj, "metadata", "name") or "")


def _created(obj: dict[str, Any]) -> str:
    return age(_get(obj, "metadata", "creationTimestamp"))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _containers(obj: dict[str, Any]) -> tuple[str, str]:
    containers = _list(_get(obj, "spec", "template", "spec", "containers"))
    names = ",".join(str(c.get("name", "")) for c in containers if isinstance(c, dict))
    images = ",".join(str(c.get("image", "")) for c in containers if isinstance(c, dict))
    return names, images


def _selector(obj: dict[str, Any]) -> str:
    return label_selector_string(_get(obj, "spec", "selector")) or "<none>"


# ---------------------------------------------------------------- built-in printers


def _pod(obj: dict[str, Any]) -> Cells:
    status = _dict(obj.get("status"))
    total = len(_list(_get(obj, "spec", "containers")))
    reason = str(status.get("reason") or status.get("phase") or "")
    restarts, ready, running = 0, 0, False
    last_restart = ""
    for cs in reversed(_list(status.get("containerStatuses"))):
        if not isinstance(cs, dict):
            continue
        restarts += _int(cs.get("restartCount"))
        finished = _get(cs, "lastState", "terminated", "finishedAt")
        if isinstance(finished, str) and finished > last_restart:
            last_restart = finished
        waiting, terminated = _get(cs, "state", "waiting"), _get(cs, "state", "terminated")
        if isinstance(waiting, dict) and waiting.get("reason"):
            reason = str(waiting["reason"])
        elif isinstance(terminated, dict) and terminated.get("reason"):
            reason = str(terminated["reason"])
        elif isinstance(terminated, dict):
            signal = _int(terminated.get("signal"))
            exit_code = _int(terminated.get("exitCode"))
            reason = f"Signal:{signal}" if signal else f"ExitCode:{exit_code}"
        elif cs.get("ready") and isinstance(_get(cs, "state", "running"), dict):
            running = True
            ready += 1
    if reason == "Completed" and running:
        conditions = _list(status.get("conditions"))
        has_ready = any(isinstance(c, dict) and c.get("type") == "Ready" for c in conditions)
        reason = "Running" if has_ready else "NotReady"
    if _get(obj, "metadata", "deletionTimestamp"):
        reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart:
        restarts_text = f"{restarts} ({age(last_restart)} ago)"
    node = _get(obj, "spec", "nodeName") or "<none>"
    ip = status.get("podIP") or "<none>"
    nominated = status.get("nominatedNodeName") or "<none>"
    return [
        _name(obj),
        f"{ready}/{total}",
        reason,
        restarts_text,
        _created(obj),
        ip,
        node,
        nominated,
        "<none>",
    ]


_POD_COLUMNS = [
    _NAME,
    _col("Ready"),
    _col("Status"),
    _col("Restarts"),
    _AGE,
    _col("IP", priority=1),
    _col("Node", priority=1),
    _col("Nominated Node", priority=1),
    _col("Readiness Gates", priority=1),
]


def _deployment(obj: dict[str, Any]) -> Cells:
    names, images = _containers(obj)
    status = obj.get("status") or {}
    want = _int(_get(obj, "spec", "replicas"))
    return [
        _name(obj),
        f"{_int(status.get('readyReplicas'))}/{want}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        _created(obj),
        names,
        images,
        _selector(obj),
    ]


_DEPLOYMENT_COLUMNS = [
    _NAME,
    _col("Ready"),
    _col(
        "Up-to-date",
        "integer",
    ),
    _col(
        "Available",
        "integer",
    ),
    _AGE,
    _col("Containers", priority=1),
    _col("Images", priority=1),
    _col("Selector", priority=1),
]


def _replicaset(obj: dict[str, Any]) -> Cells:
    names, images = _containers(obj)
    status = obj.get("status") or {}
    return [
        _name(obj),
        _int(_get(obj, "spec", "replicas")),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _created(obj),
        names,
        images,
        _selector(obj),
    ]


_REPLICASET_COLUMNS = [
    _NAME,
    _col("Desired", "integer"),
    _col("Current", "integer"),
    _col("Ready", "integer"),
    _AGE,
    _col("Containers", priority=1),
    _col("Images", priority=1),
    _col("Selector", priority=1),
]


def _service(obj: dict[str, Any]) -> Cells:
    spec = obj.get("spec") or {}
    kind = str(spec.get("type") or "ClusterIP")
    external = ",".join(_list(spec.get("externalIPs")))
    if kind == "LoadBalancer":
        ingress = _list(_get(obj, "status", "loadBalancer", "ingress"))
        ips = [str(i.get("ip") or i.get("hostname")) for i in ingress if isinstance(i, dict)]
        external = ",".join([*ips, *_list(spec.get("externalIPs"))]) or "<pending>"
    elif kind == "ExternalName":
        external = str(spec.get("externalName") or "")
    ports = []
    for port in _list(spec.get("ports")):
        if not isinstance(port, dict):
            continue
        protocol = port.get("protocol") or "TCP"
        node_port = f":{port['nodePort']}" if port.get("nodePort") else ""
        ports.append(f"{port.get('port')}{node_port}/{protocol}")
    selector = spec.get("selector") or {}
    selector_text = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"
    return [
        _name(obj),
        kind,
        spec.get("clusterIP") or "<none>",
        external or "<none>",
        ",".join(ports) or "<none>",
        _created(obj),
        selector_text,
    ]


_SERVICE_COLUMNS = [
    _NAME,
    _col("Type"),
    _col("Cluster-IP"),
    _col(
        "External-IP",
    ),
    _col("Port(s)"),
    _AGE,
    _col(
        "Selector",
        priority=1,
    ),
]


def _endpoints(obj: dict[str, Any]) -> Cells:
    addresses: list[str] = []
    for subset in _list(obj.get("subsets")):
        ports = [p.get("port") for p in _list(_get(subset, "ports")) if isinstance(p, dict)]
        for address in _list(_get(subset, "addresses")):
            ip = address.get("ip") if isinstance(address, dict) else None
            addresses.extend(f"{ip}:{p}" for p in (ports or [None]) if ip)
    text = ",".join(a.removesuffix(":None") for a in addresses[:3])
    if len(addresses) > 3:
        text += f" + {len(addresses) - 3} more..."
    return [_name(obj), text or "<none>", _created(obj)]


def _event(obj: dict[str, Any]) -> Cells:
    involved = obj.get("involvedObject") or {}
    last = (
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or _get(obj, "metadata", "creationTimestamp")
    )
    target = f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"
    return [
        age(last),
        obj.get("type") or "",
        obj.get("reason") or "",
        target,
        str(obj.get("message") or "").strip(),
    ]


def _job(obj: dict[str, Any]) -> Cells:
    status = obj.get("status") or {}
    completions = _get(obj, "spec", "completions")
    succeeded = _int(status.get("succeeded"))
    done = "Running"
    for condition in _list(status.get("conditions")):
        if isinstance(condition, dict) and condition.get("status") == "True":
            done = {"Complete": "Complete", "Failed": "Failed", "Suspended": "Suspended"}.get(
                str(condition.get("type")), done
            )
    duration = ""
    start, end = status.get("startTime"), status.get("completionTime")
    if isinstance(start, str) and start:
        begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
        finish = (
            datetime.fromisoformat(end.replace("Z", "+00:00"))
            if isinstance(end, str) and end
            else datetime.now(UTC)
        )
        duration = human_duration((finish - begin).total_seconds())
    total = completions if isinstance(completions, int) else 1
    return [_name(obj), done, f"{succeeded}/{total}", duration, _created(obj)]


def _binding(obj: dict[str, Any]) -> Cells:
    ref = obj.get("roleRef") or {}
    return [_name(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}", _created(obj)]


_Printer = tuple[list[Column], Callable[[dict[str, Any]], Cells]]

_PRINTERS: dict[tuple[str, str], _Printer] = {
    ("", "Pod"): (_POD_COLUMNS, _pod),
    ("apps", "Deployment"): (_DEPLOYMENT_COLUMNS, _deployment),
    ("apps", "ReplicaSet"): (_REPLICASET_COLUMNS, _replicaset),
    ("", "Service"): (_SERVICE_COLUMNS, _service),
    ("", "Namespace"): (
        [_NAME, _col("Status"), _AGE],
        lambda o: [_name(o), _get(o, "status", "phase") or "", _created(o)],
    ),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): (
        [_NAME, _col("Created At", "date")],
        lambda o: [_name(o), _get(o, "metadata", "creationTimestamp") or ""],
    ),
    ("", "ConfigMap"): (
        [_NAME, _col("Data", "integer"), _AGE],
        lambda o: [
            _name(o),
            len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            _created(o),
        ],
    ),
    ("", "Secret"): (
        [_NAME, _col("Type"), _col("Data", "integer"), _AGE],
        lambda o: [_name(o), o.get("type") or "", len(o.get("data") or {}), _created(o)],
    ),
    ("", "ServiceAccount"): (
        [_NAME, _col("Secrets", "integer"), _AGE],
        lambda o: [_name(o), len(_list(o.get("secrets"))), _created(o)],
    ),
    ("", "Endpoints"): ([_NAME, _col("Endpoints"), _AGE], _endpoints),
    ("", "Event"): (
        [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")],
        _event,
    ),
    ("batch", "Job"): (
        [_NAME, _col("Status"), _col("Completions"), _col("Duration"), _AGE],
        _job,
    ),
    ("rbac.authorization.k8s.io", "Role"): (
        [_NAME, _col("Created At", "date")],
        lambda o: [_name(o), _get(o, "metadata", "creationTimestamp") or ""],
    ),
    ("rbac.authorization.k8s.io", "ClusterRole"): (
        [_NAME, _col("Created At", "date")],
        lambda o: [_name(o), _get(o, "metadata", "creationTimestamp") or ""],
    ),
    ("rbac.authorization.k8s.io", "RoleBinding"): ([_NAME, _col("Role"), _AGE], _binding),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): (
        [_NAME, _col("Role"), _AGE],
        _binding,
    ),
}


# ---------------------------------------------------------------- custom resources


def _column_value(obj: dict[str, Any], column: PrinterColumn) -> Any:
    path = [p for p in column.json_path.split(".") if p]
    value = _get(obj, *path)
    if value is None:
        return None
    if column.type == "date":
        return age(value)
    if column.type == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if column.type == "boolean":
        return value if isinstance(value, bool) else None
    if column.type == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    # "string" columns print what kubectl's JSONPath prints: scalars as-is, the rest as JSON.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _custom_printer(rt: ResourceType) -> _Printer:
    columns = [_NAME] + [
        _col(c.name, c.type, c.priority) if c.name != "Age" else _AGE for c in rt.printer_columns
    ]

    def cells(obj: dict[str, Any]) -> Cells:
        return [_name(obj)] + [_column_value(obj, c) for c in rt.printer_columns]

    return columns, cells


def printer_for(rt: ResourceType) -> _Printer:
    printer = _PRINTERS.get((rt.group, rt.kind))
    if printer is not None:
        return printer
    if rt.printer_columns:
        return _custom_printer(rt)
    return [_NAME, _AGE], lambda o: [_name(o), _created(o)]


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def to_table(
    rt: ResourceType,
    objects: list[dict[str, Any]],
    *,
    list_metadata: dict[str, Any] | None = None,
    include_object: str = "Metadata",
    with_columns: bool = True,
    api_version: str = "meta.k8s.io/v1",
) -> dict[str, Any]:
    """A Table of ``objects``. ``with_columns=False`` is for watch events after the
    first: kubectl keeps using the columns it already has."""
    columns, cells = printer_for(rt)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": cells(obj)}
        row_object = _row_object(obj, include_object)
        if row_object is not None:
            row["object"] = row_object
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": list_metadata or {},
        "columnDefinitions": columns if with_columns else [],
        "rows": rows,
    }


def wants_table(accept: str) -> str | None:
    """The Table apiVersion an Accept header asks for (meta.k8s.io/v1 or v1beta1), if any."""
    for part in accept.split(","):
        params = dict(
            p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p and p.strip()
        )
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return f"meta.k8s.io/{params.get('v') or 'v1'}"
    return None
