"""Discovery and OpenAPI documents of the sandbox API, derived from the resource registry.

``kubelab.sandbox.api`` serves these. kubectl 1.31 asks ``/api`` and ``/apis`` for
aggregated discovery (apidiscovery.k8s.io/v2, one request for everything) and falls
back to the legacy per-group documents, which the Python client uses; both are served.

OpenAPI: kubectl only needs ``/openapi/v3`` to learn that the server validates fields
itself (the PATCH operation of every kind lists the ``fieldValidation`` query
parameter), so it skips client-side schema validation, which would need the full
``/openapi/v2`` protobuf document. The per-group documents therefore hold just those
operations. Without a strategic-merge request body in them, ``kubectl apply`` computes
strategic merge patches from its built-in types, and JSON merge patches for custom
resources, exactly as against a real cluster. ``/openapi/v2`` is a 404, which kubectl
tolerates.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from typing import Any

from kubelab.sandbox import resources
from kubelab.sandbox.resources import ResourceType

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-kubelab-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

_SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "log": ["get"],
    "exec": ["create", "get"],
    "portforward": ["create", "get"],
    "token": ["create"],
}


def _subresource_kind(rt: ResourceType, sub: str) -> dict[str, str]:
    if sub == "scale":
        return {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    if sub == "exec":
        return {"group": "", "version": "v1", "kind": "PodExecOptions"}
    if sub == "portforward":
        return {"group": "", "version": "v1", "kind": "PodPortForwardOptions"}
    if sub == "token":
        return {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def version_info() -> dict[str, str]:
    return dict(KUBERNETES_VERSION)


def api_versions(server_address: str) -> dict[str, Any]:
    """``/api``: the legacy core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str) -> dict[str, Any]:
    versions = [
        {"groupVersion": f"{name}/{v}", "version": v} for v in resources.group_versions()[name]
    ]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def api_group_list() -> dict[str, Any]:
    """``/apis``: every named group, preferred version first."""
    groups = [_group(g) for g in resources.group_versions() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(name: str) -> dict[str, Any] | None:
    """``/apis/{group}``; None when the group is not served."""
    if not name or name not in resources.group_versions():
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``/api/v1`` or ``/apis/{group}/{version}``; None when not served."""
    types = resources.types_in(group, version)
    if not types:
        return None
    entries: list[dict[str, Any]] = []
    for rt in types:
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        entries.append(entry)
        for sub in rt.subresources:
            kind = _subresource_kind(rt, sub)
            sub_entry: dict[str, Any] = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": kind["kind"],
                "verbs": _SUBRESOURCE_VERBS[sub],
            }
            if kind["group"] != rt.group:
                sub_entry["group"], sub_entry["version"] = kind["group"], kind["version"]
            entries.append(sub_entry)
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }


def _aggregated_resource(rt: ResourceType) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        out["shortNames"] = list(rt.short_names)
    if rt.categories:
        out["categories"] = list(rt.categories)
    if rt.subresources:
        out["subresources"] = [
            {
                "subresource": sub,
                "responseKind": _subresource_kind(rt, sub),
                "verbs": _SUBRESOURCE_VERBS[sub],
            }
            for sub in rt.subresources
        ]
    return out


def aggregated_discovery(core: bool, api_version: str = "apidiscovery.k8s.io/v2") -> dict[str, Any]:
    """``/api`` (core) or ``/apis`` (named groups) as one APIGroupDiscoveryList."""
    items = []
    for group, versions in resources.group_versions().items():
        if (group == "") != core:
            continue
        items.append(
            {
                "metadata": {"name": group},
                "versions": [
                    {
                        "version": version,
                        "resources": [
                            _aggregated_resource(rt) for rt in resources.types_in(group, version)
                        ],
                        "freshness": "Current",
                    }
                    for version in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    }


def wants_aggregated(accept: str) -> tuple[str, str] | None:
    """(content type, apiVersion) of the aggregated discovery the Accept header asks for
    first, if any."""
    for part in accept.split(","):
        params = dict(
            p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p and p.strip()
        )
        if params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") == "v2":
                return AGGREGATED_V2, "apidiscovery.k8s.io/v2"
            if params.get("v") == "v2beta1":
                return AGGREGATED_V2BETA1, "apidiscovery.k8s.io/v2beta1"
    return None


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


@functools.cache
def openapi_v3_document(group: str, version: str) -> dict[str, Any] | None:
    """A minimal OpenAPI v3 document of one group/version: PATCH operations only."""
    types = resources.types_in(group, version)
    if not types:
        return None
    parameters = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in ("dryRun", "fieldManager", "fieldValidation", "force")
    ]
    paths: dict[str, Any] = {}
    for rt in types:
        prefix = "/" + _gv_path(group, version)
        if rt.namespaced:
            prefix += "/namespaces/{namespace}"
        paths[f"{prefix}/{rt.plural}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{rt.kind}",
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {
                    "group": rt.group,
                    "version": rt.version,
                    "kind": rt.kind,
                },
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": _schemas(group, version)},
    }


@functools.cache
def _schemas(group: str, version: str) -> dict[str, Any]:
    """The schemas of one group/version's kinds, and of everything they refer to, in
    OpenAPI v3 form: what ``kubectl explain`` reads (it finds a kind by its
    ``x-kubernetes-group-version-kind``)."""
    from kubelab.sandbox import admission

    out: dict[str, Any] = {}
    for rt in resources.types_in(group, version):
        found = admission.schema_of(rt)
        if found is None:
            continue
        root, defs = found
        gvk = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
        if rt.custom:
            name = f"{'.'.join(reversed(rt.group.split('.')))}.{rt.version}.{rt.kind}"
            out[name] = {**_openapi_v3(root), "x-kubernetes-group-version-kind": gvk}
            continue
        pending = [
            d for d, body in defs.items() if body.get("x-kubernetes-group-version-kind") == gvk
        ]
        while pending:
            name = pending.pop()
            if name in out or name not in defs:
                continue
            out[name] = _openapi_v3(defs[name])
            pending.extend(_refs(defs[name]))
    return out


def _refs(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        found = [str(schema["$ref"]).rpartition("/")[2]] if "$ref" in schema else []
        return found + [r for v in schema.values() for r in _refs(v)]
    if isinstance(schema, list):
        return [r for v in schema for r in _refs(v)]
    return []


def _openapi_v3(schema: Any) -> Any:
    """kubernetes-validate's JSON schema as OpenAPI v3: refs into components, nullable
    types as plain ones."""
    if isinstance(schema, list):
        return [_openapi_v3(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref":
            out[key] = "#/components/schemas/" + str(value).rpartition("/")[2]
        elif key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if kinds:
                out[key] = kinds[0]
        else:
            out[key] = _openapi_v3(value)
    return out


@functools.cache
def openapi_v3_root() -> dict[str, Any]:
    """``/openapi/v3``: where each group/version's document is (with a content hash,
    which clients use as a cache key)."""
    paths = {}
    for group, versions in resources.group_versions().items():
        for version in versions:
            doc = json.dumps(openapi_v3_document(group, version), sort_keys=True)
            digest = hashlib.sha256(doc.encode()).hexdigest()[:32].upper()
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


# When this sandbox started: the custom kinds "exist" since then.
_STARTED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@functools.cache
def custom_resource_definitions() -> tuple[dict[str, Any], ...]:
    """The CustomResourceDefinition a real cluster would hold for each custom kind the
    sandbox serves (its versions, names, scope, schema and printer columns), Established."""
    from kubelab.sandbox import admission

    by_storage: dict[tuple[str, str], list[ResourceType]] = {}
    for rt in resources.RESOURCE_TYPES:
        if rt.custom:
            by_storage.setdefault(rt.storage_key, []).append(rt)
    out = []
    for (group, plural), served in sorted(by_storage.items()):
        first = served[0]
        names: dict[str, Any] = {
            "kind": first.kind,
            "listKind": first.list_kind,
            "plural": plural,
            "singular": first.singular,
        }
        if first.short_names:
            names["shortNames"] = list(first.short_names)
        if first.categories:
            names["categories"] = list(first.categories)
        versions = []
        for i, rt in enumerate(served):
            found = admission.schema_of(rt)
            schema = found[0] if found else {"type": "object"}
            version: dict[str, Any] = {
                "name": rt.version,
                "served": True,
                "storage": i == 0,
                "schema": {"openAPIV3Schema": schema},
            }
            if "status" in rt.subresources:
                version["subresources"] = {"status": {}}
            columns = [
                {"name": c.name, "type": c.type, "jsonPath": c.json_path}
                for c in rt.printer_columns
                if c.json_path != ".metadata.creationTimestamp"
            ]
            if columns:
                version["additionalPrinterColumns"] = columns
            versions.append(version)
        established = [
            {"type": t, "status": "True", "reason": r}
            for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
        ]
        out.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {
                    "name": f"{plural}.{group}",
                    "generation": 1,
                    "creationTimestamp": _STARTED,
                },
                "spec": {
                    "group": group,
                    "names": names,
                    "scope": "Namespaced" if first.namespaced else "Cluster",
                    "versions": versions,
                },
                "status": {
                    "acceptedNames": names,
                    "conditions": established,
                    "storedVersions": [first.version],
                },
            }
        )
    return tuple(out)
