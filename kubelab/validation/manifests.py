"""Validate rendered Kubernetes objects the way a strict API server would.

Core kinds are checked against the Kubernetes OpenAPI schemas shipped by
``kubernetes-validate`` (its ``-strict`` variant, so unknown fields are errors, like
``kubectl apply --validate=strict``). Istio, Flagger and Argo Rollouts kinds are checked
against the openAPIV3Schema of their upstream CRDs, kept in ``crds/`` (refreshed by
``scripts/sync-crd-schemas.py``), tightened the same way: an object schema that lists
properties and does not preserve unknown fields rejects keys it does not know.
Every problem of every object is reported, not just the first.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubelab import cache

if TYPE_CHECKING:  # jsonschema is imported when an object is validated, not before
    import jsonschema
    from referencing import Registry

# The Kubernetes minor version whose schemas core kinds are checked against
# (the kubectl that scripts/install-tools.sh provides is 1.31).
DEFAULT_KUBERNETES_VERSION = "1.31"
CRD_DIR = Path(__file__).resolve().parent / "crds"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class ManifestProblem:
    source: str  # where the object came from (a rendered file)
    obj: str  # Kind/name
    path: str  # field path inside the object, "" for the object itself
    message: str

    def __str__(self) -> str:
        where = f"{self.obj} {self.path}".strip()
        return f"{self.source}: {where}: {self.message}"


def object_name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return f"{obj.get('kind', '?')}/{(meta or {}).get('name', '?')}"


def _field_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _strict(schema: Any) -> Any:
    """A copy of a CRD schema in which objects reject unknown properties."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _crd_group(group: str) -> dict[str, Any] | None:
    path = CRD_DIR / f"{group}.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def crd_kinds() -> dict[str, list[str]]:
    """Known custom kinds: ``{"networking.istio.io/v1": ["DestinationRule", ...]}``."""
    kinds: dict[str, list[str]] = {}
    for path in sorted(CRD_DIR.glob("*.json")):
        group = path.stem
        for kind, info in (_crd_group(group) or {}).items():
            for version in info["versions"]:
                kinds.setdefault(f"{group}/{version}", []).append(kind)
    return kinds


def crd_schema(group: str, version: str, kind: str) -> dict[str, Any] | None:
    """The structural schema of a known custom kind's version, as its CRD declares it."""
    info = (_crd_group(group) or {}).get(kind)
    if not info or version not in info["versions"]:
        return None
    schema: dict[str, Any] = info["versions"][version]
    return schema


@functools.cache
def core_schema(api_version: str, kind: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The JSON schema of a built-in kind (kubernetes-validate's, for the Kubernetes
    version the project targets) and the definitions its ``$ref``s point into."""
    path = _core_schema_file(api_version, kind, DEFAULT_KUBERNETES_VERSION)
    definitions = _core_schema_dir(DEFAULT_KUBERNETES_VERSION) / "_definitions.json"
    if not path.is_file() or not definitions.is_file():
        return None
    defs: dict[str, Any] = json.loads(definitions.read_text())["$defs"]
    return json.loads(path.read_text()), defs


@functools.cache
def _crd_validator(group: str, version: str, kind: str) -> jsonschema.Draft7Validator | None:
    info = (_crd_group(group) or {}).get(kind)
    if not info or version not in info["versions"]:
        return None
    schema = _strict(copy.deepcopy(info["versions"][version]))
    # apiVersion/kind/metadata are checked by the API machinery, not the CRD schema.
    for key in ("apiVersion", "kind", "metadata"):
        schema.setdefault("properties", {}).setdefault(key, {})
    import jsonschema

    return jsonschema.Draft7Validator(schema)


@functools.cache
def _schema_root() -> Path:
    """kubernetes-validate's schema folder, found without importing the package."""
    spec = importlib.util.find_spec("kubernetes_validate")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModuleNotFoundError("kubernetes_validate is not installed")
    return Path(locations[0]) / "kubernetes-json-schema"


def _core_schema_dir(k8s_version: str) -> Path:
    return _schema_root() / f"v{k8s_version}.0-local-strict"


def _core_schema_file(api_version: str, kind: str, k8s_version: str) -> Path:
    # kubernetes-validate names files <kind>-<group prefix>-<version>.json.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return _core_schema_dir(k8s_version) / f"{kind.lower()}-{group_version}.json"


@functools.cache
def _core_registry(k8s_version: str) -> Registry | None:
    from referencing import Registry, Resource

    definitions = _core_schema_dir(k8s_version) / "_definitions.json"
    if not definitions.is_file():
        return None
    registry: Registry = Resource.from_contents(json.loads(definitions.read_text())) @ Registry()
    return registry


@functools.cache
def _core_validator(
    api_version: str, kind: str, k8s_version: str
) -> jsonschema.Draft202012Validator | None:
    path = _core_schema_file(api_version, kind, k8s_version)
    registry = _core_registry(k8s_version)
    if registry is None or not path.is_file():
        return None
    import jsonschema
    from referencing import Resource

    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(
        schema, registry=Resource.from_contents(schema) @ registry
    )


def _metadata_problems(obj: dict[str, Any]) -> Iterable[tuple[str, str]]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        yield "metadata", "metadata is missing"
        return
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        yield "metadata.name", "name is missing"
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        yield "metadata.name", f"{name!r} is not a valid name (lowercase letters, digits, '-')"
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if not isinstance(values, dict):
            yield f"metadata.{field}", f"{field} must be a map of strings"
            continue
        for key, value in values.items():
            if not isinstance(value, str):
                yield f"metadata.{field}.{key}", f"value must be a string (got {value!r})"


def validate_object(
    obj: Any, source: str = "<object>", k8s_version: str = DEFAULT_KUBERNETES_VERSION
) -> list[ManifestProblem]:
    """Every problem of one object; an empty list means it is valid."""
    if not isinstance(obj, dict):
        return [ManifestProblem(source, "?", "", "not a Kubernetes object (expected a mapping)")]
    name = object_name(obj)
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [ManifestProblem(source, name, "", "apiVersion and kind are required")]
    group, _, version = api_version.rpartition("/")
    validator: jsonschema.protocols.Validator | None = None
    if group and _crd_group(group) is not None:
        validator = _crd_validator(group, version, kind)
        problems = [ManifestProblem(source, name, p, m) for p, m in _metadata_problems(obj)]
    else:
        validator = _core_validator(api_version, kind, k8s_version)
        problems = []
    if validator is None:
        return [
            ManifestProblem(
                source, name, "", f"unknown kind {kind} in {api_version}: no schema to check it"
            )
        ]
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path))):
        problems.append(ManifestProblem(source, name, _field_path(error.path), error.message))
    return problems


@functools.cache
def _schemas_fingerprint(api_version: str, kind: str, k8s_version: str) -> str:
    """The files a verdict on an object of this kind depends on: its schemas, this code."""
    return cache.files_fingerprint(
        [
            Path(__file__).resolve(),
            CRD_DIR,
            _core_schema_dir(k8s_version) / "_definitions.json",
            _core_schema_file(api_version, kind, k8s_version),
        ]
    )


def _verdict_key(obj: Any, k8s_version: str) -> str | None:
    if not isinstance(obj, dict):
        return None
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return None
    return cache.digest(
        _schemas_fingerprint(api_version, kind, k8s_version),
        json.dumps(obj, sort_keys=True, default=str),
    )


def validate_objects(
    objects: Iterable[tuple[str, Any]], k8s_version: str = DEFAULT_KUBERNETES_VERSION
) -> list[ManifestProblem]:
    """Validate ``(source, object)`` pairs; problems of all objects, in order.

    An object found valid is remembered in kubelab's cache under a digest of its content
    and of the schemas (:mod:`kubelab.cache`): the same object is not checked twice.
    """
    problems: list[ManifestProblem] = []
    for source, obj in objects:
        key = _verdict_key(obj, k8s_version)
        if key is not None and cache.read("valid-objects", key) is not None:
            continue
        found = validate_object(obj, source, k8s_version)
        if not found and key is not None:
            cache.write("valid-objects", key, "")
        problems.extend(found)
    return problems
