"""What the API server does to an object before it stores it: decoding and validation.

:func:`decode` is the decoding step. It checks the JSON types against the kind's schema
(kubernetes-validate's schemas of Kubernetes 1.31 for built-in kinds, the structural
schema of its CRD for custom ones); a wrong type is a 400, as when Go fails to
unmarshal. It also handles the fields the schema does not declare:

* with ``fieldValidation=Strict`` (what kubectl asks for), they are a 400
  ``strict decoding error: unknown field "spec.x"``;
* otherwise they are dropped ("pruned"), as the real server does.

:func:`validate` is the validation step for built-in kinds. It applies the rules of
Kubernetes' validation code that students run into: names and labels, required fields,
enumerations, port ranges, duplicate names, and selectors that must match the template.
It answers with the field, reason and message kube-apiserver uses, so ``kubectl`` prints
the same ``The Deployment "web" is invalid: ...``. Rules not written here are not
checked; docs/sandbox.md says which.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubelab.k8s.objects import mapping
from kubelab.sandbox.resources import ResourceType

STRICT, WARN, IGNORE = "Strict", "Warn", "Ignore"


class DecodeError(Exception):
    """The body cannot be decoded: the API server's 400 BadRequest."""


@dataclass(frozen=True)
class Cause:
    """One field problem, as in a 422 Status's ``details.causes``."""

    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ...
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def required(field: str) -> Cause:
    return Cause(field, "FieldValueRequired", "Required value")


def invalid_value(field: str, value: Any, why: str) -> Cause:
    return Cause(field, "FieldValueInvalid", f"Invalid value: {_go(value)}: {why}")


def not_supported(field: str, value: Any, supported: tuple[str, ...]) -> Cause:
    listed = ", ".join(f'"{s}"' for s in supported)
    return Cause(
        field,
        "FieldValueNotSupported",
        f"Unsupported value: {_go(value)}: supported values: {listed}",
    )


def duplicate(field: str, value: Any) -> Cause:
    return Cause(field, "FieldValueDuplicate", f"Duplicate value: {_go(value)}")


def _go(value: Any) -> str:
    """A value the way Go's ``%#v``-ish error formatting shows it."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        inner = ", ".join(f"{_go(k)}:{_go(v)}" for k, v in sorted(value.items()))
        return "map[string]string{" + inner + "}"
    return str(value)


# --------------------------------------------------------------------------- decoding


def decode(rt: ResourceType, obj: dict[str, Any], field_validation: str = WARN) -> list[str]:
    """Check ``obj``'s types and drop its unknown fields (in place); the dropped fields'
    paths are returned. Raises :class:`DecodeError` for a wrong type, and for unknown
    fields when ``field_validation`` is Strict."""
    schema = schema_of(rt)
    if schema is None:
        return []
    root, defs = schema
    walker = _Walker(defs, preserve_metadata=rt.custom)
    walker.walk(obj, root, "")
    if walker.type_errors:
        raise DecodeError(_cannot_handle(rt, walker.type_errors[0]))
    if walker.unknown and field_validation == STRICT:
        listed = ", ".join(f'unknown field "{p}"' for p in walker.unknown)
        raise DecodeError(_cannot_handle(rt, f"strict decoding error: {listed}"))
    return walker.unknown


def _cannot_handle(rt: ResourceType, why: str) -> str:
    return f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {why}'


def schema_of(rt: ResourceType) -> tuple[dict[str, Any], dict[str, Any]] | None:
    from kubelab.validation import manifests

    if rt.custom:
        crd = manifests.crd_schema(rt.group, rt.version, rt.kind)
        return None if crd is None else (crd, {})
    return manifests.core_schema(rt.api_version, rt.kind)


def resolve(defs: dict[str, Any], schema: Any) -> dict[str, Any]:
    """``schema`` with its ``$ref``s followed into ``defs`` (an empty one if unknown)."""
    while isinstance(schema, dict) and "$ref" in schema:
        schema = defs.get(str(schema["$ref"]).rpartition("/")[2], {})
    return schema if isinstance(schema, dict) else {}


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}
_SERVER_SET = {"apiVersion", "kind", "metadata", "status"}


class _Walker:
    def __init__(self, defs: dict[str, Any], *, preserve_metadata: bool) -> None:
        self.defs = defs
        self.preserve_metadata = preserve_metadata
        self.unknown: list[str] = []
        self.type_errors: list[str] = []

    def resolve(self, schema: Any) -> dict[str, Any]:
        return resolve(self.defs, schema)

    def walk(self, value: Any, schema: Any, path: str) -> None:
        schema = self.resolve(schema)
        if value is None or not schema or schema.get("x-kubernetes-int-or-string"):
            return
        if "oneOf" in schema or "anyOf" in schema:
            return  # IntOrString and the like: any of the plain types
        types = schema.get("type")
        names = [types] if isinstance(types, str) else [t for t in types or [] if t != "null"]
        if names and not any(self._is(value, t) for t in names):
            self.type_errors.append(
                f"json: cannot unmarshal {_json_type(value)} into Go value of type "
                f"{names[0]} (at {path or 'the top'})"
            )
            return
        if isinstance(value, dict):
            self._walk_object(value, schema, path)
        elif isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                self.walk(item, schema["items"], f"{path}[{i}]")

    def _walk_object(self, value: dict[str, Any], schema: dict[str, Any], path: str) -> None:
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None:
            if isinstance(extra, dict):
                for key, item in value.items():
                    self.walk(item, extra, f"{path}.{key}" if path else key)
            return
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        for key in list(value):
            where = f"{path}.{key}" if path else key
            if key in props:
                if not path and key in _SERVER_SET and self.preserve_metadata:
                    continue  # a CRD's schema does not describe metadata and status
                self.walk(value[key], props[key], where)
            elif not path and key in _SERVER_SET:
                continue
            elif isinstance(extra, dict):
                self.walk(value[key], extra, where)
            elif not preserve and extra is not True:
                self.unknown.append(where)
                del value[key]

    @staticmethod
    def _is(value: Any, type_name: str) -> bool:
        expected = _TYPES.get(type_name)
        if expected is None:
            return True
        if isinstance(value, bool) and type_name != "boolean":
            return False
        if type_name == "integer" and isinstance(value, float):
            return value.is_integer()
        return isinstance(value, expected)


def _json_type(value: Any) -> str:
    for name, kinds in (("bool", bool), ("string", str), ("number", (int, float))):
        if isinstance(value, kinds):
            return name
    return "array" if isinstance(value, list) else "object"


# --------------------------------------------------------------------------- validation

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_IANA_SVC = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

LABEL_VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
NAME_PART_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
RFC1123_SUBDOMAIN_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
RFC1123_LABEL_RULE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
RFC1035_LABEL_RULE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
CONFIG_KEY_RULE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
PORT_RULE = "must be between 1 and 65535, inclusive"
NOT_NEGATIVE = "must be greater than or equal to 0"

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
PROTOCOLS = ("SCTP", "TCP", "UDP")
SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
STRATEGIES = ("Recreate", "RollingUpdate")


def validate(rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
    """The validation problems of a built-in object (none for custom kinds)."""
    if rt.custom:
        return []
    causes = list(_metadata(obj.get("metadata") or {}, "metadata"))
    spec = mapping(obj.get("spec"))
    kind = (rt.group, rt.kind)
    if kind == ("", "Pod"):
        causes += _pod_spec(spec, "spec")
    elif kind in (("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet")):
        causes += _workload(spec, "spec", replicas=True)
    elif kind == ("apps", "DaemonSet"):
        causes += _workload(spec, "spec", replicas=False)
    elif kind == ("batch", "Job"):
        causes += _template(spec, "spec", restart=("OnFailure", "Never"))
    elif kind == ("", "Service"):
        causes += _service(spec)
    elif kind in (("", "ConfigMap"), ("", "Secret")):
        for field in ("data", "binaryData", "stringData"):
            for key in obj.get(field) or {}:
                if not (_CONFIG_KEY.match(key) and len(key) <= 253):
                    causes.append(invalid_value(f"{field}[{key}]", key, CONFIG_KEY_RULE))
    return causes


def _metadata(meta: dict[str, Any], path: str) -> Iterator[Cause]:
    for key, value in (meta.get("labels") or {}).items():
        yield from _qualified_name(key, f"{path}.labels")
        if len(str(value)) > 63:
            yield invalid_value(f"{path}.labels", value, "must be no more than 63 characters")
        elif not _LABEL_VALUE.match(str(value)):
            yield invalid_value(f"{path}.labels", value, LABEL_VALUE_RULE)
    for key in meta.get("annotations") or {}:
        yield from _qualified_name(key.lower(), f"{path}.annotations")


def _qualified_name(key: str, path: str) -> Iterator[Cause]:
    prefix, slash, name = key.rpartition("/")
    if slash and not (prefix and _DNS_SUBDOMAIN.match(prefix) and len(prefix) <= 253):
        yield invalid_value(path, key, "prefix part " + RFC1123_SUBDOMAIN_RULE)
    if not name:
        yield invalid_value(path, key, "name part must be non-empty")
    elif len(name) > 63:
        yield invalid_value(path, key, "name part must be no more than 63 characters")
    elif not _NAME_PART.match(name):
        yield invalid_value(path, key, NAME_PART_RULE)


def _workload(spec: dict[str, Any], path: str, *, replicas: bool) -> list[Cause]:
    causes: list[Cause] = []
    if replicas and isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
        causes.append(invalid_value(f"{path}.replicas", spec["replicas"], NOT_NEGATIVE))
    selector = spec.get("selector")
    template = mapping(spec.get("template"))
    labels = (template.get("metadata") or {}).get("labels") or {}
    if selector is None:
        causes.append(required(f"{path}.selector"))
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(
            invalid_value(f"{path}.selector", "", "empty selector is invalid for deployment")
        )
    if selector is None or not _selects(selector, labels):
        causes.append(
            invalid_value(
                f"{path}.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            )
        )
    strategy = spec.get("strategy") or {}
    if strategy.get("type") and strategy["type"] not in STRATEGIES:
        causes.append(not_supported(f"{path}.strategy.type", strategy["type"], STRATEGIES))
    history = spec.get("revisionHistoryLimit")
    if isinstance(history, int) and history < 0:
        causes.append(invalid_value(f"{path}.revisionHistoryLimit", history, NOT_NEGATIVE))
    return causes + _template(spec, path, restart=("Always",))


def _selects(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and present and labels[key] in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def _template(spec: dict[str, Any], path: str, *, restart: tuple[str, ...]) -> list[Cause]:
    template = spec.get("template")
    if not isinstance(template, dict):
        return [required(f"{path}.template")]
    causes = list(_metadata(template.get("metadata") or {}, f"{path}.template.metadata"))
    pod_spec = mapping(template.get("spec"))
    causes += _pod_spec(pod_spec, f"{path}.template.spec")
    policy = pod_spec.get("restartPolicy")
    if policy in RESTART_POLICIES and policy not in restart:
        causes.append(not_supported(f"{path}.template.spec.restartPolicy", policy, restart))
    return causes


def _pod_spec(spec: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(required(f"{path}.containers"))
    names: set[str] = set()
    for field in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(field) or []):
            if isinstance(container, dict):
                causes += _container(container, f"{path}.{field}[{i}]", names)
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in RESTART_POLICIES:
        causes.append(not_supported(f"{path}.restartPolicy", policy, RESTART_POLICIES))
    dns = spec.get("dnsPolicy")
    if dns is not None and dns not in DNS_POLICIES:
        causes.append(not_supported(f"{path}.dnsPolicy", dns, DNS_POLICIES))
    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0:
        causes.append(invalid_value(f"{path}.terminationGracePeriodSeconds", grace, NOT_NEGATIVE))
    return causes


def _container(container: dict[str, Any], path: str, names: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    name = container.get("name")
    if not name:
        causes.append(required(f"{path}.name"))
    elif not (_DNS_LABEL.match(name) and len(name) <= 63):
        causes.append(invalid_value(f"{path}.name", name, RFC1123_LABEL_RULE))
    elif name in names:
        causes.append(duplicate(f"{path}.name", name))
    else:
        names.add(name)
    if not container.get("image"):
        causes.append(required(f"{path}.image"))
    pull = container.get("imagePullPolicy")
    if pull is not None and pull not in PULL_POLICIES:
        causes.append(not_supported(f"{path}.imagePullPolicy", pull, PULL_POLICIES))
    port_names: set[str] = set()
    for j, port in enumerate(container.get("ports") or []):
        if not isinstance(port, dict):
            continue
        where = f"{path}.ports[{j}]"
        number = port.get("containerPort")
        if number is None:
            causes.append(required(f"{where}.containerPort"))
        elif isinstance(number, int) and not 1 <= number <= 65535:
            causes.append(invalid_value(f"{where}.containerPort", number, PORT_RULE))
        port_name = port.get("name")
        if port_name:
            if port_name in port_names:
                causes.append(duplicate(f"{where}.name", port_name))
            port_names.add(port_name)
        protocol = port.get("protocol")
        if protocol is not None and protocol not in PROTOCOLS:
            causes.append(not_supported(f"{where}.protocol", protocol, PROTOCOLS))
    return causes


def _service(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    kind = spec.get("type") or "ClusterIP"
    if kind not in SERVICE_TYPES:
        causes.append(not_supported("spec.type", kind, SERVICE_TYPES))
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(required("spec.ports"))
    seen: set[str] = set()
    for i, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        where = f"spec.ports[{i}]"
        number = port.get("port")
        if isinstance(number, int) and not 1 <= number <= 65535:
            causes.append(invalid_value(f"{where}.port", number, PORT_RULE))
        name = port.get("name") or ""
        if len(ports) > 1 and not name:
            causes.append(required(f"{where}.name"))
        elif name in seen:
            causes.append(duplicate(f"{where}.name", name))
        seen.add(name)
        target = port.get("targetPort")
        if isinstance(target, int) and not 1 <= target <= 65535:
            causes.append(invalid_value(f"{where}.targetPort", target, PORT_RULE))
    return causes


# --------------------------------------------------------------------------- Istio

#: The name of istiod's validating webhook, as kube-apiserver's denial names it.
ISTIO_WEBHOOK = "validation.istio.io"


def istio_denial(rt: ResourceType, obj: dict[str, Any]) -> str | None:
    """What istiod's validating webhook (1.30, ``pkg/config/validation``) says of a
    VirtualService or DestinationRule, or None when it admits it. The rules kept are the
    ones a student's edit can break:

    * a route destination's host (empty, or ``*``) and subset name (a DNS-1123 label);
    * a negative weight, or several destinations whose weights add up to 0 (weights that
      do not add up to 100 are admitted, as istiod admits them: Envoy scales them);
    * an HTTP route with neither route, redirect nor direct_response;
    * a DestinationRule's host, its subsets' names, and duplicate subset names."""
    spec = mapping(obj.get("spec"))
    if (rt.group, rt.kind) == ("networking.istio.io", "VirtualService"):
        errors = _virtual_service_errors(spec)
    elif (rt.group, rt.kind) == ("networking.istio.io", "DestinationRule"):
        errors = _destination_rule_errors(spec)
    else:
        return None
    if not errors:
        return None
    if len(errors) == 1:
        listed = errors[0]
    else:  # hashicorp/go-multierror's format
        points = "\n\t".join(f"* {e}" for e in errors)
        listed = f"{len(errors)} errors occurred:\n\t{points}\n\n"
    return (
        f'admission webhook "{ISTIO_WEBHOOK}" denied the request: '
        f"configuration is invalid: {listed}"
    )


def _domain_errors(host: Any) -> list[str]:
    host = host if isinstance(host, str) else ""
    if not host:
        return ["empty domain name not allowed"]
    first = host.split(".", 1)[0]
    if not (first == "*" or re.fullmatch(r"(\*[-a-z0-9]*)?[a-z0-9]([-a-z0-9]*[a-z0-9])?", first)):
        return [f'domain name "{host}" invalid (label "{first}" invalid)']
    return []


def _subset_name_errors(name: Any) -> list[str]:
    name = name if isinstance(name, str) else ""
    if not name:
        return ["subset name cannot be empty"]
    if not (_DNS_LABEL.match(name) and len(name) <= 63):
        return [f"subset name is invalid: {name}"]
    return []


def _virtual_service_errors(spec: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    for field in ("http", "tcp", "tls"):
        for route in spec.get(field) or []:
            route = mapping(route)
            destinations = route.get("route") or []
            if field == "http" and not (
                destinations or route.get("redirect") or route.get("directResponse")
            ):
                errors.append("HTTP route, redirect or direct_response is required")
            total = 0
            for destination in destinations:
                target = mapping(mapping(destination).get("destination"))
                host = target.get("host")
                errors += (
                    [f"invalid destination host {host}"] if host == "*" else _domain_errors(host)
                )
                if target.get("subset"):
                    errors += _subset_name_errors(target["subset"])
                weight = mapping(destination).get("weight") or 0
                if isinstance(weight, int) and weight < 0:
                    errors.append(f"weight {weight} < 0")
                total += weight if isinstance(weight, int) else 0
            if len(destinations) > 1 and total == 0:
                errors.append("total destination weight = 0")
    return errors


def _destination_rule_errors(spec: dict[str, Any]) -> list[str]:
    errors = _domain_errors(spec.get("host"))
    seen: set[str] = set()
    for subset in spec.get("subsets") or []:
        name = mapping(subset).get("name")
        if isinstance(name, str) and name in seen:
            errors.append(f"duplicate subset names: {name}")
        seen.add(str(name))
        errors += _subset_name_errors(name)
    return errors
