"""The sandbox's Kubernetes-compatible HTTP API (aiohttp), served on 127.0.0.1.

kubectl and the official Python client talk to it as to a real cluster: discovery and
OpenAPI (``api_discovery``), get/list/watch (``api_watch``), create, replace, the four
patch types, delete, the status and scale subresources, server-side Tables for
``kubectl get`` (``api_tables``), pods/exec and pods/log (``api_stream``),
pods/portforward (``portforward``), the CustomResourceDefinitions of the served custom
kinds, and ``kubectl auth can-i``'s reviews. Objects live in a
:class:`~kubelab.sandbox.store.Store` shared with the sandbox controller on the same
event loop. Every request needs a bearer token: the admin's, or one the TokenRequest
API issued, whose requests RBAC authorizes (``rbac``). Every error is a Kubernetes
``Status`` with the code, reason and message kube-apiserver would send, so kubectl
prints the same errors.

:func:`start_api` starts it on a free (or given) port over HTTPS with a throwaway
self-signed certificate (kubectl sends a kubeconfig's token only to https servers; see
``api_tls``); ``server.kubeconfig(token)`` is the kubeconfig for it and ``await
server.stop()`` ends it, open watches and exec sessions included.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from kubelab.sandbox import api_discovery, api_stream, api_tls, portforward, rbac, resources
from kubelab.sandbox.api_stream import ExecHandler, LogHandler, query_bool
from kubelab.sandbox.api_tables import to_table, wants_table
from kubelab.sandbox.api_watch import serve_watch
from kubelab.sandbox.errors import (
    STALE,
    ApiError,
    bad_request,
    conflict,
    invalid,
    not_found,
    status_details,
)
from kubelab.sandbox.filters import Filter, label_selector_string
from kubelab.sandbox.patches import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_json_patch,
    apply_merge_patch,
    strategic_merge,
    unsupported_patch,
)
from kubelab.sandbox.resources import ResourceType
from kubelab.sandbox.store import Store

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Context:
    store: Store
    token: bytes
    exec_handler: ExecHandler | None
    log_handler: LogHandler | None
    forward_handler: portforward.ForwardHandler | None = None
    # Services whose proxy (services/NAME:PORT/proxy/...) reaches a process of the sandbox:
    # (namespace, service, port) -> its base URL, e.g. VictoriaMetrics' address -> Prometheus.
    service_proxies: dict[tuple[str, str, int], str] = field(default_factory=dict)
    # Long-running handlers (watch, exec, log follow): when the server stops, watches end
    # cleanly on "closing", whatever still runs a moment later is cancelled.
    streams: set[asyncio.Task[Any]] = field(default_factory=set)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    # Tokens issued by the TokenRequest API: token -> expiry (epoch seconds). They are
    # accepted until they expire, so a student's kubeconfig really stops working when
    # its token ends; what they may do is RBAC's answer for their ServiceAccount.
    issued: dict[bytes, float] = field(default_factory=dict)
    # ... and whose they are: the ServiceAccount the token was requested for.
    identities: dict[bytes, rbac.User] = field(default_factory=dict)


_CONTEXT = web.AppKey("kubelab_sandbox_context", _Context)
_USER = web.RequestKey("kubelab_sandbox_user", rbac.User)  # who asks


@dataclass(frozen=True)
class _Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


# ------------------------------------------------------------------ responses


def _json(body: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": content_type},
    )


def _status_response(error: ApiError) -> web.Response:
    return _json(error.status(), error.code)


def _not_found_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    context = request.app[_CONTEXT]
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    presented = credential.strip().encode()
    if scheme.lower() == "bearer" and hmac.compare_digest(presented, context.token):
        request[_USER] = rbac.ADMIN
    elif scheme.lower() == "bearer" and context.issued.get(presented, 0.0) > time.time():
        request[_USER] = context.identities.get(presented, rbac.ADMIN)
    else:
        return _status_response(ApiError(401, "Unauthorized", "Unauthorized"))
    try:
        return await handler(request)
    except ApiError as e:
        return _status_response(e)
    except web.HTTPException:
        raise
    except Exception as e:
        log.exception("sandbox API: %s %s failed", request.method, request.path_qs)
        return _status_response(ApiError(500, "InternalError", f"Internal error occurred: {e}"))


# ------------------------------------------------------------------ routing


def _parse_target(group: str, version: str, rest: list[str]) -> _Target:
    if not rest:
        raise _not_found_path()
    if len(rest) >= 3 and rest[0] == "namespaces" and resources.by_plural(group, version, rest[2]):
        namespace: str | None = rest[1]
        rest = rest[2:]
    else:
        namespace = None
    if len(rest) > 3:
        raise _not_found_path()
    rt = resources.by_plural(group, version, rest[0])
    if rt is None:
        raise _not_found_path()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if namespace is not None and not rt.namespaced:
        raise _not_found_path()
    if rt.namespaced and namespace is None and name is not None:
        raise _not_found_path()
    if sub is not None and sub not in rt.subresources:
        raise _not_found_path()
    return _Target(rt, namespace, name, sub)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    parts = [p for p in request.path.split("/") if p]
    accept = request.headers.get("Accept", "")
    if not parts:
        paths = ["/api", "/api/v1", "/apis", "/openapi/v3", "/version"]
        return _json({"paths": paths})
    head = parts[0]
    if request.method != "GET" and head not in ("api", "apis"):
        raise _method_not_allowed()
    if head == "version" and len(parts) == 1:
        return _json(api_discovery.version_info())
    if head in ("healthz", "readyz", "livez"):
        return web.Response(text="ok", content_type="text/plain")
    if head == "openapi":
        return _openapi(parts[1:])
    if head == "api":
        if len(parts) == 1:
            return _discovery_root(request, core=True, accept=accept)
        if parts[1] != "v1":
            raise _not_found_path()
        group, version, rest = "", "v1", parts[2:]
    elif head == "apis":
        if len(parts) == 1:
            return _discovery_root(request, core=False, accept=accept)
        if len(parts) == 2:
            return _found(api_discovery.api_group(parts[1]))
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _not_found_path()
    if not rest:
        if request.method != "GET":
            raise _method_not_allowed()
        return _found(api_discovery.api_resource_list(group, version))
    if group == "" and len(rest) >= 5 and rest[0::2][:3] == ["namespaces", "services", "proxy"]:
        return await _service_proxy(request, rest[1], rest[3], rest[5:])
    watch_path = rest[0] == "watch"  # the deprecated /watch/ prefix
    target = _parse_target(group, version, rest[1:] if watch_path else rest)
    _authorize(request, target, watch_path or query_bool(request.query, "watch"))
    return await _handle(request, target, watch_path)


def _authorize(request: web.Request, target: _Target, watch: bool) -> None:
    """RBAC, as kube-apiserver applies it (the admin token may do anything)."""
    user: rbac.User = request[_USER]
    if rbac.MASTERS in user.groups:
        return
    attrs = _attributes(request.method, target, watch)
    if not rbac.allowed(_store(request), user, attrs):
        raise rbac.forbidden(user, attrs)


def _attributes(method: str, target: _Target, watch: bool) -> rbac.Attributes:
    verb = rbac.verb_of(
        method, named=target.name is not None, watch=watch, subresource=target.subresource
    )
    return rbac.Attributes(
        verb,
        target.rt.group,
        target.rt.plural,
        target.subresource or "",
        target.namespace or "",
        target.name or "",
    )


def _found(body: dict[str, Any] | None) -> web.Response:
    if body is None:
        raise _not_found_path()
    return _json(body)


def _discovery_root(request: web.Request, *, core: bool, accept: str) -> web.Response:
    aggregated = api_discovery.wants_aggregated(accept)
    if aggregated is not None:
        content_type, api_version = aggregated
        return _json(api_discovery.aggregated_discovery(core, api_version), 200, content_type)
    if core:
        host = request.host or "127.0.0.1"
        return _json(api_discovery.api_versions(host))
    return _json(api_discovery.api_group_list())


def _openapi(rest: list[str]) -> web.Response:
    if rest == ["v3"]:
        return _json(api_discovery.openapi_v3_root())
    if len(rest) >= 3 and rest[0] == "v3":
        if rest[1] == "api" and len(rest) == 3:
            return _found(api_discovery.openapi_v3_document("", rest[2]))
        if rest[1] == "apis" and len(rest) == 4:
            return _found(api_discovery.openapi_v3_document(rest[2], rest[3]))
    # /openapi/v2 (protobuf) is not served; kubectl does not need it (see api_discovery).
    raise _not_found_path()


# ------------------------------------------------------------------ request helpers


async def _body(request: web.Request, *, allow_empty: bool = False) -> Any:
    content_type = request.content_type.lower()
    raw = await request.read()
    if "protobuf" in content_type or "cbor" in content_type:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f'the body of the request was in an unknown format - "{content_type}" is not '
            "supported by the kubelab sandbox; send application/json",
        )
    if not raw.strip():
        if allow_empty:
            return None
        raise bad_request("the request body is empty")
    try:
        return json.loads(raw)
    except ValueError as e:
        if "yaml" not in content_type:
            raise bad_request(f"the request body is not valid JSON: {e}") from None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise bad_request(f"the request body is not valid YAML: {e}") from None


def _dry_run(request: web.Request, options: Any = None) -> bool:
    values = request.query.getall("dryRun", [])
    if isinstance(options, dict) and isinstance(options.get("dryRun"), list):
        values = [*values, *options["dryRun"]]
    for value in values:
        if value != "All":
            raise bad_request(f'invalid dry run option "{value}": only "All" is supported')
    return bool(values)


def _check_body(target: _Target, body: Any, *, url_name: str | None) -> dict[str, Any]:
    """The object in a create/replace body, matched against the URL like kube-apiserver."""
    rt = target.rt
    if not isinstance(body, dict):
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            "the body is not an object"
        )
    kind = body.get("kind")
    if kind is not None and kind != rt.kind:
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f'the object has kind "{kind}"'
        )
    api_version = body.get("apiVersion")
    if api_version is not None:
        group = str(api_version).rpartition("/")[0]
        if group != rt.group:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.api_version})"
            )
    meta = body.get("metadata")
    if meta is None:
        meta = body["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    if url_name is not None and meta.get("name") not in (None, url_name):
        raise bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on the URL "
            f"({url_name})"
        )
    if url_name is not None:
        meta["name"] = url_name
    if rt.namespaced:
        if meta.get("namespace") not in (None, "", target.namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        meta["namespace"] = target.namespace
    return body


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return 0
    try:
        return max(0, int(raw))
    except ValueError:
        raise bad_request(f'invalid limit "{raw}"') from None


def _timeout(request: web.Request) -> float | None:
    raw = request.query.get("timeoutSeconds", "")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise bad_request(f'invalid timeoutSeconds "{raw}"') from None


def _key_of(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _encode_continue(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"start": list(key)}).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
        return str(namespace), str(name)
    except (ValueError, KeyError, TypeError):
        message = "The provided continue parameter is too old; start a new list without it."
        raise ApiError(410, "Expired", message) from None


# ------------------------------------------------------------------ verbs


async def _handle(request: web.Request, target: _Target, watch_path: bool) -> web.StreamResponse:
    method = request.method
    sub = target.subresource
    if target.rt.kind == "CustomResourceDefinition":
        return _definitions(request, target)
    if sub in ("exec", "log", "portforward"):
        return await _stream(request, target)
    if sub == "scale":
        return await _scale(request, target)
    if sub == "token":
        if method != "POST":
            raise _method_not_allowed()
        return await _token_request(request, target)
    if sub == "status":
        if method == "GET":
            return _object_response(request, target.rt, _get(request, target))
        if method in ("PUT", "PATCH"):
            return await _write(request, target)
        raise _method_not_allowed()
    watch = watch_path or query_bool(request.query, "watch")
    if target.name is None:
        if method == "GET":
            return await (_watch(request, target) if watch else _list(request, target))
        if method == "POST" and target.rt.group == "authorization.k8s.io":
            return await _review(request, target)
        if method == "POST":
            return await _create(request, target)
        if method == "DELETE":
            return await _delete_collection(request, target)
        raise _method_not_allowed()
    if method == "GET":
        if watch:
            return await _watch(request, target)
        return _object_response(request, target.rt, _get(request, target))
    if method in ("PUT", "PATCH"):
        return await _write(request, target)
    if method == "DELETE":
        return await _delete(request, target)
    raise _method_not_allowed()


def _definitions(request: web.Request, target: _Target) -> web.Response:
    """The served custom kinds' CustomResourceDefinitions: read-only."""
    if request.method != "GET" or query_bool(request.query, "watch"):
        raise _method_not_allowed()
    crds = [json.loads(json.dumps(c)) for c in api_discovery.custom_resource_definitions()]
    if target.name is not None:
        found = next((c for c in crds if c["metadata"]["name"] == target.name), None)
        if found is None:
            raise not_found(target.rt, target.name)
        return _object_response(request, target.rt, found)
    meta = {"resourceVersion": str(_store(request).resource_version)}
    table_version = wants_table(request.headers.get("Accept", ""))
    if table_version is not None:
        include = request.query.get("includeObject", "Metadata")
        table = to_table(
            target.rt, crds, list_metadata=meta, include_object=include, api_version=table_version
        )
        return _json(table, content_type=_table_content_type(table_version))
    body = {"kind": target.rt.list_kind, "apiVersion": target.rt.api_version, "metadata": meta}
    return _json({**body, "items": crds})


async def _review(request: web.Request, target: _Target) -> web.StreamResponse:
    """SelfSubjectAccessReview and SelfSubjectRulesReview, answered for the caller."""
    body = await _body(request)
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object")
    spec: dict[str, Any] = body["spec"] if isinstance(body.get("spec"), dict) else {}
    user: rbac.User = request[_USER]
    store = _store(request)
    if target.rt.kind == "SelfSubjectRulesReview":
        rules = rbac.rules_for(store, user, str(spec.get("namespace") or ""))
        status: dict[str, Any] = {
            "resourceRules": [
                {k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if k in r}
                for r in rules
            ],
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*"]}],
            "incomplete": False,
        }
    else:
        asked = spec.get("resourceAttributes") or {}
        attrs = rbac.Attributes(
            str(asked.get("verb", "")),
            str(asked.get("group", "")),
            str(asked.get("resource", "")),
            str(asked.get("subresource", "")),
            str(asked.get("namespace", "")),
            str(asked.get("name", "")),
        )
        status = {"allowed": rbac.allowed(store, user, attrs) if asked else True}
    answer = {
        "kind": target.rt.kind,
        "apiVersion": target.rt.api_version,
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": status,
    }
    return _json(answer, status=201)


async def _token_request(request: web.Request, target: _Target) -> web.StreamResponse:
    """POST serviceaccounts/NAME/token: a TokenRequest answered with a random token."""
    _get(request, target)  # 404 when the ServiceAccount does not exist
    body = await _body(request, allow_empty=True) or {}
    spec = dict(body.get("spec") or {})
    seconds = int(spec.get("expirationSeconds") or 3600)
    if seconds < 600:
        raise ApiError(
            422,
            "Invalid",
            "spec.expirationSeconds: Invalid value: may not specify a duration "
            "less than 10 minutes",
        )
    token = secrets.token_urlsafe(32)
    expires = time.time() + seconds
    context = request.app[_CONTEXT]
    context.issued[token.encode()] = expires
    assert target.namespace is not None and target.name is not None
    context.identities[token.encode()] = rbac.service_account_user(target.namespace, target.name)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    answer = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": target.name, "namespace": target.namespace},
        "spec": {**spec, "expirationSeconds": seconds, "audiences": spec.get("audiences") or []},
        "status": {"token": token, "expirationTimestamp": stamp},
    }
    return _json(answer, status=201)


def _store(request: web.Request) -> Store:
    return request.app[_CONTEXT].store


def _get(request: web.Request, target: _Target) -> dict[str, Any]:
    assert target.name is not None
    return _store(request).get(target.rt, target.namespace, target.name)


def _object_response(
    request: web.Request, rt: ResourceType, obj: dict[str, Any], status: int = 200
) -> web.Response:
    table_version = wants_table(request.headers.get("Accept", ""))
    if table_version is None:
        return _json(obj, status)
    meta = {"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion", "")}
    include = request.query.get("includeObject", "Metadata")
    table = to_table(
        rt, [obj], list_metadata=meta, include_object=include, api_version=table_version
    )
    return _json(table, status, _table_content_type(table_version))


def _table_content_type(table_version: str) -> str:
    return f"application/json;as=Table;v={table_version.split('/')[1]};g=meta.k8s.io"


async def _list(request: web.Request, target: _Target) -> web.StreamResponse:
    query = request.query
    after = _decode_continue(query["continue"]) if query.get("continue") else None
    limit = _limit(request)
    # One page, not the whole collection: the objects are the store's (serialized, never
    # changed), and only the page is looked up after the continue key.
    items, more, rv = _store(request).page(
        target.rt,
        target.namespace,
        query.get("labelSelector", ""),
        query.get("fieldSelector", ""),
        limit=limit,
        after=after,
    )
    meta: dict[str, Any] = {"resourceVersion": rv}
    if more:
        meta["continue"] = _encode_continue(_key_of(items[-1]))
        meta["remainingItemCount"] = more
    table_version = wants_table(request.headers.get("Accept", ""))
    if table_version is not None:
        include = query.get("includeObject", "Metadata")
        table = to_table(
            target.rt,
            items,
            list_metadata=meta,
            include_object=include,
            api_version=table_version,
        )
        return _json(table, content_type=_table_content_type(table_version))
    body = {
        "kind": target.rt.list_kind,
        "apiVersion": target.rt.api_version,
        "metadata": meta,
        "items": items,
    }
    return _json(body)


async def _watch(request: web.Request, target: _Target) -> web.StreamResponse:
    query = request.query
    field_selector = query.get("fieldSelector", "")
    if target.name is not None:
        # GET .../name?watch=1 watches one object.
        name_term = f"metadata.name={target.name}"
        field_selector = f"{field_selector},{name_term}" if field_selector else name_term
    flt = Filter.build(target.rt, target.namespace, query.get("labelSelector", ""), field_selector)
    resource_version = query.get("resourceVersion", "")
    if resource_version not in ("", "0") and not resource_version.isdigit():
        raise bad_request(f'invalid resourceVersion "{resource_version}"')
    return await _long_running(
        request,
        serve_watch(
            request,
            _store(request),
            target.rt,
            flt,
            resource_version=resource_version,
            timeout=_timeout(request),
            table_version=wants_table(request.headers.get("Accept", "")),
            include_object=query.get("includeObject", "Metadata"),
            send_initial_events=query_bool(query, "sendInitialEvents"),
            closing=request.app[_CONTEXT].closing,
        ),
    )


async def _long_running(
    request: web.Request, work: Awaitable[web.StreamResponse]
) -> web.StreamResponse:
    """Run a streaming handler so that stopping the server cancels it."""
    task = asyncio.current_task()
    streams = request.app[_CONTEXT].streams
    if task is not None:
        streams.add(task)
    try:
        return await work
    finally:
        if task is not None:
            streams.discard(task)


async def _create(request: web.Request, target: _Target) -> web.StreamResponse:
    body = _check_body(target, await _body(request), url_name=None)
    obj = _store(request).create(
        target.rt,
        body,
        dry_run=_dry_run(request),
        field_validation=_field_validation(request),
        field_manager=_field_manager(request),
    )
    return _object_response(request, target.rt, obj, 201)


_PATCH_CONTENT_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)


async def _write(request: web.Request, target: _Target) -> web.StreamResponse:
    """PUT and PATCH of an object or its status."""
    assert target.name is not None
    store = _store(request)
    if request.method == "PUT":
        body = _check_body(target, await _body(request), url_name=target.name)
        obj = store.replace(
            target.rt,
            body,
            dry_run=_dry_run(request),
            subresource=target.subresource,
            field_validation=_field_validation(request),
            field_manager=_field_manager(request),
        )
        return _object_response(request, target.rt, obj)
    patch_type = request.content_type.lower()
    if patch_type not in _PATCH_CONTENT_TYPES:
        raise unsupported_patch(strategic=not target.rt.custom)
    patch = await _body(request)
    created = patch_type == APPLY_PATCH and not store.exists(
        target.rt, target.namespace, target.name
    )
    obj = store.patch(
        target.rt,
        target.namespace,
        target.name,
        patch_type,
        patch,
        request.query.get("fieldManager") if patch_type == APPLY_PATCH else _field_manager(request),
        dry_run=_dry_run(request),
        subresource=target.subresource,
        field_validation=_field_validation(request),
        force=query_bool(request.query, "force"),
    )
    return _object_response(request, target.rt, obj, 201 if created else 200)


def _field_manager(request: web.Request) -> str:
    """Who makes a write: ``fieldManager``, else the client's User-Agent up to its first
    "/" (``kubectl``, ``OpenAPI-Generator``), as kube-apiserver names it."""
    given = request.query.get("fieldManager")
    if given:
        return given
    agent = request.headers.get("User-Agent", "")
    return agent.split("/", 1)[0][:128] or "unknown"


def _field_validation(request: web.Request) -> str:
    """``fieldValidation``: Strict (kubectl's), Warn (the default) or Ignore."""
    value = request.query.get("fieldValidation") or "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise bad_request(
            f"fieldValidation parameter unsupported: {value}. "
            "Supported values are: Ignore, Warn, Strict"
        )
    return value


async def _delete(request: web.Request, target: _Target) -> web.StreamResponse:
    assert target.name is not None
    options = await _body(request, allow_empty=True)
    options = options if isinstance(options, dict) else {}
    policy = request.query.get("propagationPolicy") or options.get("propagationPolicy")
    if options.get("orphanDependents") is True:
        policy = "Orphan"
    obj = _store(request).delete(
        target.rt,
        target.namespace,
        target.name,
        propagation_policy=policy,
        dry_run=_dry_run(request, options),
        preconditions=options.get("preconditions"),
    )
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp") or target.rt.kind in ("Pod", "Namespace"):
        # Not gone yet (finalizers, a graceful pod, a terminating namespace): the object.
        return _object_response(request, target.rt, obj)
    details = status_details(target.rt, str(meta.get("name")), target.rt.plural)
    details["uid"] = meta.get("uid")
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    return _json({**status, "details": details})


async def _delete_collection(request: web.Request, target: _Target) -> web.StreamResponse:
    store = _store(request)
    options = await _body(request, allow_empty=True)
    options = options if isinstance(options, dict) else {}
    dry_run = _dry_run(request, options)
    policy = request.query.get("propagationPolicy") or options.get("propagationPolicy")
    items, _ = store.list(
        target.rt,
        target.namespace,
        request.query.get("labelSelector", ""),
        request.query.get("fieldSelector", ""),
    )
    deleted = []
    for item in items:
        meta = item["metadata"]
        with contextlib.suppress(ApiError):  # already gone through a cascade
            deleted.append(
                store.delete(
                    target.rt,
                    meta.get("namespace"),
                    meta["name"],
                    propagation_policy=policy,
                    dry_run=dry_run,
                )
            )
    body = {
        "kind": target.rt.list_kind,
        "apiVersion": target.rt.api_version,
        "metadata": {"resourceVersion": str(store.resource_version)},
        "items": deleted,
    }
    return _json(body)


# ------------------------------------------------------------------ scale


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    selector = status.get("selector")
    if not isinstance(selector, str):
        selector = label_selector_string(spec.get("selector"))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0), "selector": selector},
    }


async def _scale(request: web.Request, target: _Target) -> web.StreamResponse:
    assert target.name is not None
    store, rt = _store(request), target.rt
    current = _get(request, target)
    scale = _scale_of(current)
    if request.method == "GET":
        return _json(scale)
    if request.method == "PUT":
        wanted = await _body(request)
    elif request.method == "PATCH":
        patch_type = request.content_type.lower()
        patch = await _body(request)
        if patch_type == JSON_PATCH:
            wanted = apply_json_patch(scale, patch)
        elif patch_type == MERGE_PATCH:
            wanted = apply_merge_patch(scale, patch)
        elif patch_type == STRATEGIC_MERGE_PATCH:
            wanted = strategic_merge(scale, patch)
        else:
            raise unsupported_patch(strategic=True)  # Scale is a built-in kind
    else:
        raise _method_not_allowed()
    if not isinstance(wanted, dict):
        raise bad_request("the Scale must be an object")
    given_rv = (wanted.get("metadata") or {}).get("resourceVersion")
    if given_rv and str(given_rv) != str(scale["metadata"].get("resourceVersion")):
        raise conflict(rt, target.name, STALE)
    replicas = (wanted.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        problem = f"spec.replicas: Invalid value: {replicas!r}: must be greater than or equal to 0"
        raise invalid(rt, target.name, [problem])
    updated = store.patch(
        rt,
        target.namespace,
        target.name,
        MERGE_PATCH,
        {"spec": {"replicas": replicas}},
        dry_run=_dry_run(request),
    )
    return _json(_scale_of(updated))


# ------------------------------------------------------------------ exec and logs


async def _stream(request: web.Request, target: _Target) -> web.StreamResponse:
    assert target.name is not None and target.namespace is not None
    context = request.app[_CONTEXT]
    if target.subresource == "exec":
        if request.method not in ("GET", "POST"):
            raise _method_not_allowed()
        work = api_stream.serve_exec(
            request, context.store, target.namespace, target.name, context.exec_handler
        )
    elif target.subresource == "portforward":
        if request.method not in ("GET", "POST"):
            raise _method_not_allowed()
        context.store.get(target.rt, target.namespace, target.name)  # 404 when missing
        if context.forward_handler is None:
            raise bad_request("port-forward is not available in this sandbox")
        work = portforward.serve(request, target.namespace, target.name, context.forward_handler)
    else:
        if request.method != "GET":
            raise _method_not_allowed()
        work = api_stream.serve_log(
            request, context.store, target.namespace, target.name, context.log_handler
        )
    return await _long_running(request, work)


# ------------------------------------------------------------------ services/proxy


async def _service_proxy(
    request: web.Request, namespace: str, name_port: str, path: list[str]
) -> web.StreamResponse:
    """GET through a Service's proxy, as ``kubectl get --raw`` and the checks use it.

    The sandbox's pods are processes, not addresses an API server dials; the proxy reaches
    only the sandbox's stand-ins for the lesson components' APIs (VictoriaMetrics' Prometheus
    API, Jaeger's query API): a documented difference (docs/sandbox.md).
    """
    rt = resources.by_plural("", "v1", "services")
    assert rt is not None
    name, _, port_text = name_port.partition(":")
    _authorize(request, _Target(rt, namespace, name, "proxy"), watch=False)
    if request.method != "GET":
        raise _method_not_allowed()
    context = request.app[_CONTEXT]
    port = int(port_text) if port_text.isdigit() else 0
    base = context.service_proxies.get((namespace, name, port))
    if base is None:
        # As kube-apiserver answers: 404 for a missing Service, and for one without a
        # selector (it has no Endpoints object); 503 when it has one (the sandbox's pods
        # are processes, which its proxy does not reach).
        service = context.store.get(rt, namespace, name)
        if not (service.get("spec") or {}).get("selector"):
            raise not_found(rt, name)
        raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
    url = base.rstrip("/") + "/" + "/".join(path)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, params=request.query) as answer,
        ):
            body = await answer.read()
            kind = answer.headers.get("Content-Type", "application/octet-stream")
            return web.Response(status=answer.status, body=body, headers={"Content-Type": kind})
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiError(
            503, "ServiceUnavailable", f"error trying to reach service: {exc or 'timeout'}"
        ) from exc


# ------------------------------------------------------------------ app and server


def _fault_middleware(every: int) -> Any:
    """Answer every ``every``-th request with a transient error (429, 500, 503 in turn),
    as a loaded API server does: how kubelab's own tests prove that it retries."""
    count = 0
    faults = (
        ApiError(429, "TooManyRequests", "Too many requests, please try again later."),
        ApiError(500, "InternalError", "Internal error occurred: injected fault"),
        ApiError(503, "ServiceUnavailable", "The server is currently unable to handle it."),
    )

    @web.middleware
    async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal count
        count += 1
        if count % every == 0:
            error = faults[(count // every) % len(faults)]
            response = _status_response(error)
            if error.code == 429:
                response.headers["Retry-After"] = "0"
            return response
        return await handler(request)

    return inject


def _latency_middleware(seconds: float) -> Any:
    @web.middleware
    async def delay(request: web.Request, handler: Handler) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await handler(request)

    return delay


def create_api_app(
    store: Store,
    token: str,
    exec_handler: ExecHandler | None = None,
    log_handler: LogHandler | None = None,
    fault_every: int = 0,
    latency: float = 0.0,
    forward_handler: portforward.ForwardHandler | None = None,
    service_proxies: dict[tuple[str, str, int], str] | None = None,
) -> web.Application:
    """The aiohttp application serving ``store``; every request needs ``token``.

    ``fault_every`` > 0 answers every n-th request with a transient error, ``latency`` > 0
    delays every answer by that many seconds, as a distant API server does (tests and
    benchmarks only)."""
    if not token:
        raise ValueError("the sandbox API needs a non-empty token")
    middlewares = [_middleware]
    if fault_every > 0:
        middlewares.insert(0, _fault_middleware(fault_every))
    if latency > 0:
        middlewares.insert(0, _latency_middleware(latency))
    app = web.Application(middlewares=middlewares, client_max_size=16 * 1024 * 1024)
    app[_CONTEXT] = _Context(
        store,
        token.encode(),
        exec_handler,
        log_handler,
        forward_handler,
        service_proxies=dict(service_proxies or {}),
    )
    app.router.add_route("*", "/{tail:.*}", _dispatch)

    async def stop_streams(app: web.Application) -> None:
        context = app[_CONTEXT]
        context.closing.set()
        if context.streams:
            await asyncio.wait(set(context.streams), timeout=0.5)
        for task in list(context.streams):
            task.cancel()

    app.on_shutdown.append(stop_streams)
    return app


@dataclass
class ApiServer:
    """A running sandbox API; ``await stop()`` ends it."""

    runner: web.AppRunner
    host: str
    port: int
    ca_pem: bytes | None  # the server's self-signed certificate; None for plain HTTP

    @property
    def url(self) -> str:
        scheme = "https" if self.ca_pem is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def kubeconfig(
        self, token: str, namespace: str = "default", name: str = "kubelab-sandbox"
    ) -> dict[str, Any]:
        """A kubeconfig (as a dict, write it as JSON or YAML) for kubectl and the client."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
            ],
            "current-context": name,
        }

    async def stop(self) -> None:
        """Close the port and end open watches, exec sessions and log streams."""
        if self.runner.server is not None:
            await self.runner.cleanup()


async def serve(
    app: web.Application, *, host: str = "127.0.0.1", port: int = 0, tls: bool = True
) -> ApiServer:
    """Serve ``app`` on ``host:port`` (0: a free port), over HTTPS with a fresh
    self-signed certificate unless ``tls`` is False (then kubectl cannot authenticate:
    client-go sends kubeconfig credentials only over https; see ``api_tls``)."""
    certificate = api_tls.self_signed() if tls else None
    # handler_cancellation: a watch whose client went away ends at once instead of at its
    # timeout. The short shutdown timeout bounds stop() when a handler ignores cancellation.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        context = certificate.server_context() if certificate else None
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    context_of = app.get(_CONTEXT)
    if context_of is not None and certificate is not None:
        context_of.store.set_root_ca(certificate.cert_pem.decode())
    return ApiServer(runner, host, int(bound), certificate.cert_pem if certificate else None)


async def start_api(
    store: Store,
    token: str,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    tls: bool = True,
    exec_handler: ExecHandler | None = None,
    log_handler: LogHandler | None = None,
    fault_every: int = 0,
    latency: float = 0.0,
    forward_handler: portforward.ForwardHandler | None = None,
    service_proxies: dict[tuple[str, str, int], str] | None = None,
) -> ApiServer:
    """Create the app for ``store`` and serve it on 127.0.0.1 (a free port unless given);
    ``server.kubeconfig(token)`` is what kubectl and the Python client need."""
    app = create_api_app(
        store,
        token,
        exec_handler,
        log_handler,
        fault_every,
        latency,
        forward_handler,
        service_proxies,
    )
    return await serve(app, host=host, port=port, tls=tls)
