"""The sandbox cluster's object store: what etcd plus the API server's registry do.

``kubelab.sandbox.api`` serves it over HTTP to kubectl and the Python client, and the
sandbox controller (same asyncio loop) reads it, reacts to its watch events and writes
status through it. Everything runs on one event loop thread, so there is no locking;
no method awaits.

Kubernetes semantics kept here: a global monotonic resourceVersion bumped by every
write (no-op writes change nothing and emit no event), optimistic concurrency (a stale
``metadata.resourceVersion`` is a 409 Conflict), ``metadata.generation`` bumped only
when something outside metadata and status changes, ``generateName``, namespaces that
must exist and whose deletion deletes their content, garbage collection of dependents
through ``ownerReferences``, the status subresource (create, replace and patch ignore
``.status`` of kinds that have one; write it with :meth:`Store.update_status`), the four
patch types, light defaulting (Deployment replicas, Service clusterIP, ...) and label
and field selectors. Errors are :class:`ApiError` carrying the Kubernetes ``Status``.

Stored dicts are never mutated once stored (every write stores a new dict), so watch
history and raw listeners can share them; everything handed to callers is a copy.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubelab.checks import selectors
from kubelab.sandbox import admission, resources
from kubelab.sandbox.admission import Cause, DecodeError
from kubelab.sandbox.resources import ResourceType

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
# kubectl's --type names, accepted by Store.patch for convenience.
_PATCH_ALIASES = {
    "json": JSON_PATCH,
    "merge": MERGE_PATCH,
    "strategic": STRATEGIC_MERGE_PATCH,
    "apply": APPLY_PATCH,
}

Validator = Callable[[dict[str, Any]], list[str]]

log = logging.getLogger(__name__)

# Namespaces every cluster starts with.
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# The alphabet of generateName suffixes (no vowels, no look-alikes), as in Kubernetes.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Metadata only the server sets; dropped from objects being created.
_SERVER_FIELDS = (
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A failed API request, carrying the Kubernetes ``Status`` the server answers with."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r})"


def not_found(rt: ResourceType, name: str) -> ApiError:
    details = _details(rt, name, rt.plural)
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', details)


def already_exists(rt: ResourceType, name: str) -> ApiError:
    details = _details(rt, name, rt.plural)
    message = f'{rt.group_resource} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, details)


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    details = _details(rt, name, rt.plural)
    message = f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}'
    return ApiError(409, "Conflict", message, details)


STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(rt: ResourceType, name: str, problems: list[str] | list[Cause]) -> ApiError:
    """422 Invalid; kubectl prints ``The <Kind> "<name>" is invalid: <problems>``."""
    joined = ", ".join(str(p) for p in problems)
    joined = joined if len(problems) == 1 else f"[{joined}]"
    causes = []
    for problem in problems:
        if isinstance(problem, Cause):
            cause = {"reason": problem.reason, "message": problem.message, "field": problem.field}
            causes.append(cause)
            continue
        field, sep, message = problem.partition(": ")
        # "spec.x: Required value" -> a cause with a field, as the API server reports it.
        if sep and re.fullmatch(r"[A-Za-z0-9_.\[\]/-]+", field):
            causes.append({"reason": "FieldValueInvalid", "message": message, "field": field})
        else:
            causes.append({"reason": "FieldValueInvalid", "message": problem})
    details = {**_details(rt, name, rt.kind), "causes": causes}
    return ApiError(422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {joined}', details)


def _details(rt: ResourceType, name: str, kind: str) -> dict[str, Any]:
    """A Status's details: the group is left out for the core group, as Go's omitempty."""
    details = {"name": name, "group": rt.group, "kind": kind}
    if not rt.group:
        del details["group"]
    return details


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unprocessable(message: str) -> ApiError:
    """A 422 without details: kubectl prints ``The request is invalid: <message>``."""
    return ApiError(422, "Invalid", message)


def namespace_not_found(namespace: str) -> ApiError:
    return not_found(resources.NAMESPACES, namespace)


def name_mismatch(in_body: Any, in_url: str) -> ApiError:
    return bad_request(
        f"the name of the object ({in_body}) does not match the name on the URL ({in_url})"
    )


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class WatchEvent:
    """What :meth:`Store.subscribe` queues deliver: one change, the object deep-copied.

    ``resource`` is always the preferred version of the resource (``object`` carries its
    apiVersion), whatever version the write used.
    """

    type: str  # "ADDED" | "MODIFIED" | "DELETED"
    resource: ResourceType
    object: dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One write as recorded in the watch history; ``object``/``old`` are shared, read-only."""

    type: str
    resource: ResourceType  # preferred version
    object: dict[str, Any]
    old: dict[str, Any] | None
    resource_version: int


# --------------------------------------------------------------------------- helpers


def copy_json(value: Any) -> Any:
    """Deep copy of JSON-like data (dicts, lists, scalars); much faster than deepcopy."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: unlike ``==``, ``True`` is not ``1`` (RFC 6902 ``test``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything whose change bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = _meta(obj).get("labels")
    return labels if isinstance(labels, dict) else {}


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


FieldRequirement = tuple[str, str, str]  # (path, "=" | "!=", value)


def parse_field_selector(selector: str) -> list[FieldRequirement]:
    """``metadata.name=x,status.phase!=Running``; any dotted field path is accepted."""
    out: list[FieldRequirement] = []
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise bad_request(f'invalid field selector: "{term}": expected key=value or key!=value')
        op = "!=" if m[2] == "!=" else "="
        out.append((m[1], op, m[3]))
    return out


_OBJECT_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_EVENT_FIELDS = (
    *(f"involvedObject.{f}" for f in _OBJECT_FIELDS),
    *("reason", "reportingComponent", "source", "type"),
)
# The field selectors each kind supports besides metadata.name and metadata.namespace,
# as kube-apiserver's registries declare them; any other is a 400.
_FIELD_LABELS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "status.nominatedNodeName",
    ),
    ("", "Event"): _EVENT_FIELDS,
    ("events.k8s.io", "Event"): _EVENT_FIELDS,
    ("", "Secret"): ("type",),
    ("", "Namespace"): ("status.phase",),
    ("", "Node"): ("spec.unschedulable",),
    ("", "Service"): ("spec.clusterIP", "spec.type"),
    ("", "ReplicationController"): ("status.replicas",),
    ("apps", "ReplicaSet"): ("status.replicas",),
    ("batch", "Job"): ("status.successful",),
}


def parse_label_selector(selector: str) -> list[selectors.Requirement]:
    try:
        return selectors.parse(selector)
    except ValueError as e:
        raise bad_request(f"unable to parse requirement: {e}") from e


@dataclass(frozen=True)
class Filter:
    """Which objects of one resource a list or watch wants."""

    storage_key: tuple[str, str]
    namespace: str | None = None
    labels: tuple[selectors.Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def build(
        cls, rt: ResourceType, namespace: str | None, label_selector: str, field_selector: str
    ) -> Filter:
        fields = tuple(parse_field_selector(field_selector))
        supported = _FIELD_LABELS.get((rt.group, rt.kind), ())
        for path, _op, _value in fields:
            if path not in supported and path not in ("metadata.name", "metadata.namespace"):
                raise bad_request(f"field label not supported: {path}")
        return cls(
            rt.storage_key,
            namespace if rt.namespaced else None,
            tuple(parse_label_selector(label_selector)),
            fields,
        )

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and _meta(obj).get("namespace") != self.namespace:
            return False
        if self.labels and not selectors.matches(list(self.labels), _labels(obj)):
            return False
        for path, op, value in self.fields:
            if (_field_value(obj, path) == value) != (op == "="):
                return False
        return True


def label_selector_string(selector: Any) -> str:
    """A ``metav1.LabelSelector`` (matchLabels/matchExpressions) as a ``-l`` string."""
    if not isinstance(selector, dict):
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


# --------------------------------------------------------------------------- JSON patch


_MISSING = object()


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise bad_request(f"json patch: path must be a string, got {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise unprocessable(f'json patch: invalid pointer "{path}": must start with "/"')
    tokens = path[1:].split("/")
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise unprocessable(f'json patch: invalid pointer "{path}": bad "~" escape')
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _index(token: str, size: int, path: str, *, append_ok: bool) -> int:
    if append_ok and token == "-":
        return size
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise unprocessable(f'json patch: "{path}": "{token}" is not an array index')
    index = int(token)
    if index > size or (index == size and not append_ok):
        raise unprocessable(f'json patch: "{path}": index {index} out of bounds')
    return index


def _container(doc: Any, tokens: list[str], path: str) -> Any:
    """The value holding the last token of ``tokens`` (which must exist)."""
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise unprocessable(f'json patch: "{path}": path does not exist ("{token}")')
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), path, append_ok=False)]
        else:
            raise unprocessable(f'json patch: "{path}": cannot descend into a scalar')
    return node


def _jp_get(doc: Any, tokens: list[str], path: str) -> Any:
    if not tokens:
        return doc
    parent = _container(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise unprocessable(f'json patch: "{path}": path does not exist')
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(last, len(parent), path, append_ok=False)]
    raise unprocessable(f'json patch: "{path}": path does not exist')


def _jp_add(doc: Any, tokens: list[str], value: Any, path: str) -> Any:
    if not tokens:
        return value
    parent = _container(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), path, append_ok=True), value)
    else:
        raise unprocessable(f'json patch: "{path}": parent is not an object or array')
    return doc


def _jp_remove(doc: Any, tokens: list[str], path: str) -> tuple[Any, Any]:
    if not tokens:
        raise unprocessable('json patch: cannot remove the whole document ("")')
    parent = _container(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise unprocessable(f'json patch: remove "{path}": path does not exist')
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), path, append_ok=False))
    raise unprocessable(f'json patch: remove "{path}": path does not exist')


def apply_json_patch(doc: Any, patch: Any) -> Any:
    """RFC 6902 on a copy of ``doc``; all-or-nothing. 400 for a malformed patch, 422 when
    an operation does not apply (missing path, failed ``test``)."""
    if not isinstance(patch, list):
        raise bad_request("json patch: the patch must be a JSON array of operations")
    doc = copy_json(doc)
    for number, op in enumerate(patch):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise bad_request(f"json patch: operation {number} is not an object with an op")
        kind, path = op["op"], op.get("path", _MISSING)
        if path is _MISSING:
            raise bad_request(f'json patch: operation {number} ("{kind}") has no path')
        tokens = _pointer(path)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f'json patch: operation {number} ("{kind}") has no value')
        if kind == "add":
            doc = _jp_add(doc, tokens, copy_json(op["value"]), path)
        elif kind == "remove":
            doc, _ = _jp_remove(doc, tokens, path)
        elif kind == "replace":
            if not tokens:
                doc = copy_json(op["value"])
                continue
            _jp_get(doc, tokens, path)  # must exist
            parent = _container(doc, tokens, path)
            if isinstance(parent, dict):
                parent[tokens[-1]] = copy_json(op["value"])
            else:
                parent[_index(tokens[-1], len(parent), path, append_ok=False)] = copy_json(
                    op["value"]
                )
        elif kind in ("move", "copy"):
            source = op.get("from", _MISSING)
            if source is _MISSING:
                raise bad_request(f'json patch: operation {number} ("{kind}") has no from')
            from_tokens = _pointer(source)
            if kind == "move":
                if from_tokens == tokens:
                    _jp_get(doc, tokens, path)
                    continue
                if tokens[: len(from_tokens)] == from_tokens:
                    raise unprocessable(
                        f'json patch: cannot move "{source}" into its own child "{path}"'
                    )
                doc, value = _jp_remove(doc, from_tokens, source)
            else:
                value = copy_json(_jp_get(doc, from_tokens, source))
            doc = _jp_add(doc, tokens, value, path)
        elif kind == "test":
            if not json_equal(_jp_get(doc, tokens, path), op["value"]):
                raise unprocessable(f'json patch: test of "{path}" failed')
        else:
            raise bad_request(f'json patch: unknown operation "{kind}"')
    return doc


# --------------------------------------------------------------------------- merge patches


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value, ``target`` is untouched."""
    if not isinstance(patch, dict):
        return copy_json(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return copy_json(result)


# Lists merged by key instead of replaced, as in the Kubernetes API types' patchMergeKey
# (approximated by field name: container ports merge by containerPort, Service ports by port).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "ports": ("containerPort", "port"),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
    "ownerReferences": ("uid",),
    "resourceClaims": ("name",),
    "secrets": ("name",),
}
# Lists of scalars merged as sets (patchStrategy merge).
MERGE_SETS = frozenset({"finalizers"})

_DELETE = object()


def _is_directive(key: str) -> bool:
    return key in ("$patch", "$retainKeys") or key.startswith(
        ("$setElementOrder/", "$deleteFromPrimitiveList/")
    )


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not _is_directive(k)}
    if isinstance(value, list):
        return [
            _strip_directives(v)
            for v in value
            if not (isinstance(v, dict) and v.get("$patch") in ("replace", "delete"))
        ]
    return value


def _item_key(item: Any, keys: tuple[str, ...]) -> tuple[str, Any] | None:
    if not isinstance(item, dict):
        return None
    for key in keys:
        if key in item:
            return (key, item[key])
    return None


def _merge_list(original: list[Any], patch: list[Any], field: str) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        kept = [p for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
        return [copy_json(_strip_directives(p)) for p in kept]
    if field in MERGE_SETS:
        out = list(original)
        out.extend(copy_json(p) for p in patch if p not in out)
        return out
    keys = MERGE_KEYS[field]
    result = list(original)
    for item in patch:
        key = _item_key(item, keys)
        if key is None:
            result.append(copy_json(_strip_directives(item)))
            continue
        at = next((i for i, o in enumerate(result) if _item_key(o, (key[0],)) == key), None)
        if isinstance(item, dict) and item.get("$patch") == "delete":
            result = [o for o in result if _item_key(o, (key[0],)) != key]
        elif at is None:
            result.append(strategic_merge({}, item))
        else:
            result[at] = strategic_merge(result[at], item)
    return result


def _reorder(items: list[Any], order: list[Any], field: str) -> list[Any]:
    """Apply ``$setElementOrder``: listed elements in that order, the others after."""
    keys = MERGE_KEYS.get(field)

    def ident(value: Any) -> Any:
        return _item_key(value, keys) if keys else value

    wanted = [ident(o) for o in order]
    ranked = [i for w in wanted for i in items if ident(i) == w]
    return ranked + [i for i in items if ident(i) not in wanted]


def strategic_merge(original: Any, patch: Any) -> Any:
    """Kubernetes strategic merge patch, approximated: maps merge, ``null`` deletes, lists
    named in :data:`MERGE_KEYS` merge by key, other lists are replaced; ``$patch``
    (replace/delete), ``$retainKeys``, ``$setElementOrder`` and
    ``$deleteFromPrimitiveList`` directives are honoured."""
    if not isinstance(patch, dict):
        return copy_json(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return copy_json(_strip_directives(patch))
    if directive == "delete":
        return _DELETE
    result = dict(original) if isinstance(original, dict) else {}
    orders: dict[str, list[Any]] = {}
    removals: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            removals[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and (key in MERGE_KEYS or key in MERGE_SETS):
            current = result.get(key)
            result[key] = _merge_list(current if isinstance(current, list) else [], value, key)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy_json(_strip_directives(value))
    for field, values in removals.items():
        if isinstance(result.get(field), list):
            result[field] = [v for v in result[field] if v not in values]
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, field)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return copy_json(result)


# --------------------------------------------------------------------------- defaulting


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


class _Defaulter:
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


# --------------------------------------------------------------------------- the store


ObjectKey = tuple[str, str]  # (namespace or "", name)
# Module-level aliases: inside Store, "list" names the method.
_Objects = list[dict[str, Any]]
_Changes = list[Change]


class Store:
    """In-memory Kubernetes objects with resourceVersions, watch events and patches.

    ``validate`` (optional) is called with every object about to be stored by create,
    replace and patch (apiVersion as written); any problems it returns make the write a
    422 Invalid. ``history`` is how many past changes a watch can resume from.

    Deleting a namespace deletes everything in it. With ``namespace_termination`` > 0 (and
    a running event loop) it happens that many seconds later, the namespace showing
    Terminating meanwhile (new content is then refused with 403), as in a real cluster;
    with 0 (the default) at once.
    """

    def __init__(
        self,
        validate: Validator | None = None,
        *,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
        history: int = 4096,
        namespace_termination: float = 0.0,
    ) -> None:
        self._validate = validate
        self._namespace_termination = namespace_termination
        self._rv = 0
        self._objects: dict[tuple[str, str], dict[ObjectKey, dict[str, Any]]] = {}
        self._history: deque[Change] = deque(maxlen=history)
        self._history_floor = 0  # changes after this resourceVersion are all in _history
        self.root_ca = ""
        self._queues: list[asyncio.Queue[WatchEvent]] = []
        self._listeners: list[Callable[[Change], None]] = []
        self._defaults = _Defaulter()
        for name in namespaces:
            self.create(resources.NAMESPACES, {"metadata": {"name": name}})

    # ----------------------------------------------------------------- reads

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        """A copy of one object (apiVersion of ``rt``); ApiError 404 NotFound."""
        return self._present(rt, self._current(rt, namespace, name))

    def exists(self, rt: ResourceType, namespace: str | None, name: str) -> bool:
        return self._key(rt, namespace, name) in self._bucket(rt)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[_Objects, str]:
        """Copies of the matching objects sorted by namespace/name, and the list's
        resourceVersion (a watch from it sees every later change). 400 for bad selectors."""
        flt = Filter.build(rt, namespace, label_selector, field_selector)
        return [self._present(rt, o) for o in self.select(flt)], str(self._rv)

    def select(self, flt: Filter) -> _Objects:
        """The stored (shared, read-only) objects a filter matches, sorted by key."""
        bucket = self._objects.get(flt.storage_key, {})
        return [bucket[k] for k in sorted(bucket) if flt.matches(bucket[k])]

    # ----------------------------------------------------------------- writes

    def create(
        self,
        rt: ResourceType,
        obj: dict[str, Any],
        *,
        dry_run: bool = False,
        field_validation: str = admission.WARN,
    ) -> dict[str, Any]:
        """Store a new object: 409 AlreadyExists, 404 when its namespace does not exist,
        422 Invalid (bad name, validation problems). Namespaced objects without
        metadata.namespace go to "default"; ``generateName`` is honoured."""
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        new = copy_json(obj)
        new["apiVersion"], new["kind"] = resources.preferred(rt).api_version, rt.kind
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        name = meta.get("name")
        if not name and isinstance(meta.get("generateName"), str) and meta["generateName"]:
            while True:
                suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
                name = meta["generateName"] + suffix
                if not self.exists(rt, meta.get("namespace") or "default", name):
                    break
        if not isinstance(name, str) or not name:
            problem = "metadata.name: Required value: name or generateName is required"
            raise invalid(rt, "", [problem])
        meta["name"] = name
        if rt.namespaced:
            namespace = meta.get("namespace") or "default"
            meta["namespace"] = namespace
            ns = self._bucket(resources.NAMESPACES).get(("", namespace))
            if ns is None:
                raise namespace_not_found(namespace)
            if _meta(ns).get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{rt.group_resource} "{name}" is forbidden: unable to create new content '
                    f"in namespace {namespace} because it is being terminated",
                    _details(rt, name, rt.plural),
                )
        else:
            meta.pop("namespace", None)
        self._check_name(rt, name)
        self._check_metadata(rt, new)
        if self.exists(rt, meta.get("namespace"), name):
            raise already_exists(rt, name)
        for field in _SERVER_FIELDS:
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if _has_generation(rt):
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if "status" in rt.subresources:
            # Like the API server: status is written through the status subresource only.
            new.pop("status", None)
        self._decode(rt, new, field_validation)
        self._defaults(rt, new, None)
        self._run_validation(rt, new, name)
        created = self._commit(rt, None, new, dry_run)
        if rt.storage_key == resources.NAMESPACES.storage_key and not dry_run:
            self._seed_namespace(name)
        return created

    def set_root_ca(self, pem: str) -> None:
        """The API server's CA, published in every namespace as ConfigMap
        ``kube-root-ca.crt`` (what kube-controller-manager's root CA publisher does)."""
        self.root_ca = pem
        for namespace in list(self._bucket(resources.NAMESPACES)):
            self._seed_namespace(namespace[1])

    def _seed_namespace(self, namespace: str) -> None:
        """What controllers add to a new namespace: ServiceAccount ``default`` and, once
        the CA is known, ConfigMap ``kube-root-ca.crt``."""
        seeds: list[tuple[ResourceType, dict[str, Any]]] = [
            (resources.SERVICEACCOUNTS, {"metadata": {"name": "default"}})
        ]
        if self.root_ca:
            seeds.append(
                (
                    resources.CONFIGMAPS,
                    {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": self.root_ca}},
                )
            )
        for rt, obj in seeds:
            if self.exists(rt, namespace, obj["metadata"]["name"]):
                continue
            obj["metadata"]["namespace"] = namespace
            self.create(rt, obj)

    def replace(
        self,
        rt: ResourceType,
        obj: dict[str, Any],
        *,
        dry_run: bool = False,
        subresource: str | None = None,
        field_validation: str = admission.WARN,
    ) -> dict[str, Any]:
        """Replace an object (PUT): 404 when missing, 409 Conflict when
        ``metadata.resourceVersion`` is given and stale. ``subresource="status"`` replaces
        only the status; otherwise the status of kinds with a status subresource is kept."""
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        meta = _meta(obj)
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(rt, "", ["metadata.name: Required value: name is required"])
        namespace = (meta.get("namespace") or "default") if rt.namespaced else None
        old = self._current(rt, namespace, name)
        given_rv = meta.get("resourceVersion")
        if given_rv and str(given_rv) != _meta(old)["resourceVersion"]:
            raise conflict(rt, name, STALE)
        if subresource == "status":
            return self._write_status(rt, old, obj.get("status"), dry_run)
        new = copy_json(obj)
        return self._update(rt, old, new, dry_run, field_validation)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        field_manager: str | None = None,
        *,
        dry_run: bool = False,
        subresource: str | None = None,
        field_validation: str = admission.WARN,
    ) -> dict[str, Any]:
        """Patch an object with one of :data:`PATCH_TYPES` or kubectl's names for them
        (json, merge, strategic, apply); 415 for others, and for
        strategic merge on custom resources, as Kubernetes does). Server-side apply is
        approximated as "create when missing, else merge-patch the applied config";
        ``field_manager`` is accepted and not recorded."""
        del field_manager  # no managedFields in the sandbox
        patch_type = patch_type.split(";")[0].strip().lower()
        patch_type = _PATCH_ALIASES.get(patch_type, patch_type)
        if patch_type not in PATCH_TYPES or (patch_type == STRATEGIC_MERGE_PATCH and rt.custom):
            raise unsupported_patch(strategic=not rt.custom)
        key = self._key(rt, namespace, name)
        if patch_type == APPLY_PATCH and key not in self._bucket(rt) and subresource is None:
            if not isinstance(patch, dict):
                raise bad_request("apply patch: the body must be an object")
            body = copy_json(patch)
            body.setdefault("metadata", {})
            if body["metadata"].get("name", name) != name:
                raise name_mismatch(body["metadata"]["name"], name)
            body["metadata"]["name"] = name
            if rt.namespaced:
                body["metadata"]["namespace"] = namespace
            return self.create(rt, body, dry_run=dry_run, field_validation=field_validation)
        old = self._current(rt, namespace, name)
        current = self._present(rt, old)
        if patch_type == JSON_PATCH:
            patched = apply_json_patch(current, patch)
        elif patch_type == STRATEGIC_MERGE_PATCH:
            if not isinstance(patch, dict):
                raise bad_request("strategic merge patch: the patch must be a JSON object")
            patched = strategic_merge(current, patch)
        else:
            if not isinstance(patch, dict):
                raise bad_request("merge patch: the patch must be a JSON object")
            patched = apply_merge_patch(current, patch)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata", {}), dict):
            raise unprocessable("the patched object is not a Kubernetes object")
        meta = patched.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise name_mismatch(meta.get("name"), name)
        given_rv = meta.get("resourceVersion")
        if given_rv and str(given_rv) != _meta(old)["resourceVersion"]:
            raise conflict(rt, name, STALE)
        if subresource == "status":
            return self._write_status(rt, old, patched.get("status"), dry_run)
        return self._update(rt, old, patched, dry_run, field_validation)

    def update_status(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        status: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Replace ``.status`` only (no generation bump, no validation); 404 when missing.
        Writing the status it already has changes nothing and emits no event."""
        return self._write_status(rt, self._current(rt, namespace, name), status, dry_run)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation_policy: str | None = None,
        dry_run: bool = False,
        preconditions: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Delete an object now and return it; 404 when missing, 409 when a uid or
        resourceVersion precondition fails. A namespace takes everything in it along;
        dependents (ownerReferences) are deleted too unless the policy is "Orphan"."""
        old = self._current(rt, namespace, name)
        meta = _meta(old)
        for field in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(field)
            if wanted and str(wanted) != str(meta.get(field)):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: {field} in precondition: {wanted}, "
                    f"{field} in object meta: {meta.get(field)}",
                )
        if dry_run:
            return self._present(rt, old)
        if rt.storage_key == resources.NAMESPACES.storage_key:
            return self._delete_namespace(rt, old)
        orphan = propagation_policy == "Orphan"
        if meta.get("finalizers"):
            # Finalizers hold the object: it is only marked, and goes once they are removed.
            if meta.get("deletionTimestamp"):
                return self._present(rt, old)
            marked = dict(old, metadata=dict(meta, deletionTimestamp=now_rfc3339()))
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(rt, old, marked, False)
        if orphan:
            self._orphan_dependents(str(meta.get("uid", "")))
        removed = self._remove(rt, old, cascade=not orphan)
        return self._present(rt, removed)

    def _orphan_dependents(self, uid: str) -> None:
        """What the garbage collector does for propagationPolicy Orphan: the dependents
        lose their ownerReference to ``uid`` and stay."""
        for storage_key, bucket in list(self._objects.items()):
            for obj in list(bucket.values()):
                refs = _meta(obj).get("ownerReferences") or []
                kept = [r for r in refs if not (isinstance(r, dict) and r.get("uid") == uid)]
                if len(kept) != len(refs):
                    rt = _preferred_for(storage_key)
                    freed = dict(obj, metadata=dict(_meta(obj), ownerReferences=kept))
                    if not kept:
                        del freed["metadata"]["ownerReferences"]
                    self._commit(rt, obj, freed, False)

    def _delete_namespace(self, rt: ResourceType, old: dict[str, Any]) -> dict[str, Any]:
        name = _meta(old)["name"]
        loop = _running_loop()
        if self._namespace_termination <= 0 or loop is None:
            self._finish_namespace(name, None)
            return self._present(rt, dict(old, status={"phase": "Terminating"}))
        if _meta(old).get("deletionTimestamp"):
            return self._present(rt, old)  # already terminating
        # Like the namespace controller: Terminating first, content and namespace later,
        # so "kubectl delete -f" of a namespace and its content deletes each object.
        terminating = dict(old, status=dict(old.get("status") or {}, phase="Terminating"))
        terminating["metadata"] = dict(_meta(old), deletionTimestamp=now_rfc3339())
        uid = _meta(old).get("uid")
        loop.call_later(self._namespace_termination, self._finish_namespace, name, uid)
        return self._commit(rt, old, terminating, False)

    def _finish_namespace(self, name: str, uid: str | None) -> None:
        ns = self._bucket(resources.NAMESPACES).get(("", name))
        if ns is None or (uid is not None and _meta(ns).get("uid") != uid):
            return  # deleted (and maybe recreated) meanwhile
        for ns_rt in resources.namespaced_types():
            for obj in self.select(Filter(ns_rt.storage_key, name)):
                self._remove(ns_rt, obj, cascade=False)
        self._remove(resources.NAMESPACES, ns, cascade=True)

    # ----------------------------------------------------------------- watch

    def subscribe(self) -> asyncio.Queue[WatchEvent]:
        """A queue receiving a :class:`WatchEvent` for every later change, in order."""
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[WatchEvent]) -> None:
        if queue in self._queues:
            self._queues.remove(queue)

    def listen(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback`` with every later :class:`Change` (shared objects: read only);
        returns the function that stops it. The HTTP watch uses this."""
        self._listeners.append(callback)

        def stop() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return stop

    def changes_since(self, resource_version: int) -> _Changes | None:
        """The recorded changes after ``resource_version``; None when history no longer
        reaches back that far (the API then answers 410 Gone, clients relist)."""
        if resource_version < self._history_floor:
            return None
        return [c for c in self._history if c.resource_version > resource_version]

    # ----------------------------------------------------------------- internals

    def _bucket(self, rt: ResourceType) -> dict[ObjectKey, dict[str, Any]]:
        return self._objects.setdefault(rt.storage_key, {})

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> ObjectKey:
        if rt.namespaced:
            if not namespace:
                raise bad_request(f"a namespace is required for {rt.group_resource}")
            return (namespace, name)
        return ("", name)

    def _current(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._bucket(rt).get(self._key(rt, namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    @staticmethod
    def _present(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = copy_json(obj)
        out["apiVersion"] = rt.api_version
        return out

    @staticmethod
    def _check_name(rt: ResourceType, name: str) -> None:
        """Names as the API server validates them (messages shortened)."""
        if rt.group == "rbac.authorization.k8s.io":
            # RBAC names are path segments ("system:controller:x" is valid).
            if name in (".", "..") or "/" in name or "%" in name:
                raise invalid(
                    rt,
                    name,
                    [f'metadata.name: Invalid value: "{name}": may not contain "/" or "%"'],
                )
            return
        if rt.storage_key == resources.NAMESPACES.storage_key:
            pattern, limit, rule = _DNS_LABEL, 63, admission.RFC1123_LABEL_RULE
        elif rt.storage_key == resources.SERVICES.storage_key:
            pattern, limit, rule = _DNS_1035, 63, admission.RFC1035_LABEL_RULE
        else:
            pattern, limit, rule = _DNS_SUBDOMAIN, 253, admission.RFC1123_SUBDOMAIN_RULE
        if len(name) > limit:
            rule = f"must be no more than {limit} characters"
        elif pattern.match(name):
            return
        raise invalid(rt, name, [f'metadata.name: Invalid value: "{name}": {rule}'])

    @staticmethod
    def _check_metadata(rt: ResourceType, obj: dict[str, Any]) -> None:
        """Labels and annotations must be string maps (the API server fails to decode
        anything else, with a 400)."""
        meta = _meta(obj)
        for field in ("labels", "annotations"):
            values = meta.get(field)
            if values is None:
                continue
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                raise bad_request(
                    f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                    f"metadata.{field} must be a map of string keys to string values"
                )

    @staticmethod
    def _decode(rt: ResourceType, obj: dict[str, Any], field_validation: str) -> None:
        try:
            admission.decode(rt, obj, field_validation)
        except DecodeError as error:
            raise bad_request(str(error)) from None

    def _run_validation(self, rt: ResourceType, obj: dict[str, Any], name: str) -> None:
        causes = admission.validate(rt, obj)
        if causes:
            raise invalid(rt, name, causes)
        if self._validate is None:
            return
        presented = dict(obj)
        presented["apiVersion"] = rt.api_version
        problems = self._validate(presented)
        if problems:
            raise invalid(rt, name, [str(p) for p in problems])

    def _update(
        self,
        rt: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        dry_run: bool,
        field_validation: str = admission.WARN,
    ) -> dict[str, Any]:
        """The common tail of replace and patch of the main resource."""
        old_meta = _meta(old)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        # Identity and server-managed fields cannot be changed by clients.
        for field in ("name", "namespace", "uid", "creationTimestamp", "generation"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if "status" in rt.subresources:
            if "status" in old:
                new["status"] = copy_json(old["status"])
            else:
                new.pop("status", None)
        self._check_metadata(rt, new)
        self._decode(rt, new, field_validation)
        self._defaults(rt, new, old)
        if _has_generation(rt) and not json_equal(_spec_part(new), _spec_part(old)):
            meta["generation"] = int(old_meta.get("generation", 0)) + 1
        if json_equal(new, old):
            return self._present(rt, old)
        self._run_validation(rt, new, meta["name"])
        if not old_meta.get("deletionTimestamp"):
            meta.pop("deletionTimestamp", None)
        else:
            meta["deletionTimestamp"] = old_meta["deletionTimestamp"]
            if not meta.get("finalizers") and not dry_run and not self._is_namespace(rt):
                self._commit(rt, old, new, dry_run)
                current = self._bucket(rt)[self._key(rt, meta.get("namespace"), meta["name"])]
                return self._present(rt, self._remove(rt, current, cascade=True))
        return self._commit(rt, old, new, dry_run)

    @staticmethod
    def _is_namespace(rt: ResourceType) -> bool:
        return rt.storage_key == resources.NAMESPACES.storage_key

    def _write_status(
        self, rt: ResourceType, old: dict[str, Any], status: Any, dry_run: bool
    ) -> dict[str, Any]:
        if status is not None and not isinstance(status, dict):
            raise bad_request("status must be an object")
        new = dict(old)
        if status is None:
            new.pop("status", None)
        else:
            new["status"] = copy_json(status)
        if json_equal(new, old):
            return self._present(rt, old)
        return self._commit(rt, old, new, dry_run)

    def _commit(
        self, rt: ResourceType, old: dict[str, Any] | None, new: dict[str, Any], dry_run: bool
    ) -> dict[str, Any]:
        if dry_run:
            return self._present(rt, new)
        self._rv += 1
        new["metadata"] = dict(new["metadata"], resourceVersion=str(self._rv))
        meta = new["metadata"]
        self._bucket(rt)[self._key(rt, meta.get("namespace"), meta["name"])] = new
        self._emit("ADDED" if old is None else "MODIFIED", rt, new, old)
        return self._present(rt, new)

    def _remove(self, rt: ResourceType, obj: dict[str, Any], *, cascade: bool) -> dict[str, Any]:
        meta = _meta(obj)
        key = self._key(rt, meta.get("namespace"), meta["name"])
        if self._bucket(rt).get(key) is not obj:
            return obj  # already gone (reached twice through owner references)
        del self._bucket(rt)[key]
        self._rv += 1
        gone = dict(obj, metadata=dict(meta, resourceVersion=str(self._rv)))
        self._emit("DELETED", rt, gone, obj)
        if cascade:
            self._collect_dependents(str(meta.get("uid", "")))
        return gone

    def _collect_dependents(self, uid: str) -> None:
        """Garbage collection: delete every object an ownerReference ties to ``uid``."""
        if not uid:
            return
        for storage_key, bucket in list(self._objects.items()):
            for obj in list(bucket.values()):
                refs = _meta(obj).get("ownerReferences") or []
                if any(isinstance(r, dict) and r.get("uid") == uid for r in refs):
                    self._remove(_preferred_for(storage_key), obj, cascade=True)

    def _emit(
        self, kind: str, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        storage_rt = resources.preferred(rt)
        change = Change(kind, storage_rt, obj, old, self._rv)
        if len(self._history) == self._history.maxlen:
            self._history_floor = self._history[0].resource_version
        self._history.append(change)
        for queue in list(self._queues):
            queue.put_nowait(WatchEvent(kind, storage_rt, copy_json(obj)))
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a broken watcher must not fail the write that woke it
                log.exception("sandbox store: watch listener failed")


# Built-in groups whose kinds keep metadata.generation (custom resources always do).
_GENERATION_GROUPS = {
    "apps",
    "batch",
    "networking.k8s.io",
    "policy",
    "autoscaling",
    "apiextensions.k8s.io",
}


def _has_generation(rt: ResourceType) -> bool:
    return rt.custom or rt.group in _GENERATION_GROUPS or rt.kind == "ReplicationController"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _preferred_for(storage_key: tuple[str, str]) -> ResourceType:
    for rt in resources.RESOURCE_TYPES:
        if rt.storage_key == storage_key:
            return resources.preferred(rt)
    raise KeyError(storage_key)


def unsupported_patch(*, strategic: bool) -> ApiError:
    """415 for a patch content type the resource does not take (strategic: whether
    strategic merge is one it takes)."""
    accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
    if strategic:
        accepted.insert(2, STRATEGIC_MERGE_PATCH)
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
    )
