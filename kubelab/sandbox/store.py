"""The sandbox cluster's object store: what etcd plus the API server's registry do.

``kubelab.sandbox.api`` serves it over HTTP to kubectl and the Python client, and the
sandbox controller (same asyncio loop) reads it, reacts to its watch events and writes
status through it. Everything runs on one event loop thread, so there is no locking;
no method awaits.

Kubernetes semantics kept here: a global monotonic resourceVersion bumped by every
write (no-op writes change nothing and emit no event), optimistic concurrency (a stale
``metadata.resourceVersion`` is a 409 Conflict), ``metadata.generation`` bumped only
when something outside metadata and status changes (on the kinds that keep one),
``generateName``, namespaces that must exist and whose deletion deletes their content,
finalizers, garbage collection of dependents through ``ownerReferences`` (background,
foreground and orphan), the status subresource (create, replace and patch ignore
``.status`` of kinds that have one; write it with :meth:`Store.update_status`) and field
ownership. The rest lives beside it:

* ``admission``: decoding (types, unknown fields) and validation, Istio's rules too;
* ``defaults``: what the API server fills in;
* ``patches`` (over ``kubelab.k8s.patch``) and ``fieldmanager`` (server-side apply);
* ``filters``: label and field selectors;
* ``errors``: :class:`~kubelab.sandbox.errors.ApiError` and the Status answers;
* ``index``: objects by namespace, pages without copies, the dependents index.

Stored dicts are never mutated once stored (every write stores a new dict), so watch
history, raw listeners and :meth:`Store.page` share them; the other reads hand out copies.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubelab.k8s.data import copy_json, json_equal, now_rfc3339
from kubelab.k8s.objects import meta as _meta
from kubelab.sandbox import admission, fieldmanager, resources
from kubelab.sandbox.admission import DecodeError
from kubelab.sandbox.defaults import Defaulter
from kubelab.sandbox.errors import (
    STALE,
    ApiError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    invalid_options,
    name_mismatch,
    namespace_not_found,
    not_found,
    status_details,
    unprocessable,
)
from kubelab.sandbox.filters import Filter
from kubelab.sandbox.index import Bucket, Dependents, ObjectKey
from kubelab.sandbox.patches import (
    APPLY_PATCH,
    JSON_PATCH,
    PATCH_ALIASES,
    PATCH_TYPES,
    STRATEGIC_MERGE_PATCH,
    apply_json_patch,
    apply_merge_patch,
    strategic_merge,
    unsupported_patch,
)
from kubelab.sandbox.resources import ResourceType

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


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything whose change bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


# --------------------------------------------------------------------------- the store


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
        self._objects: dict[tuple[str, str], Bucket] = {}
        self._dependents = Dependents()
        self._history: deque[Change] = deque(maxlen=history)
        self._history_floor = 0  # changes after this resourceVersion are all in _history
        self.root_ca = ""
        self._queues: list[asyncio.Queue[WatchEvent]] = []
        self._listeners: list[Callable[[Change], None]] = []
        self._defaults = Defaulter()
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
        return self.select_page(flt)[0]

    def select_page(
        self, flt: Filter, limit: int = 0, after: ObjectKey | None = None
    ) -> tuple[_Objects, int]:
        """Up to ``limit`` (0: all) stored (shared, read-only) objects a filter matches,
        in key order after the key ``after``, and how many more match after them. Only
        the filter's namespace is looked at."""
        bucket = self._objects.get(flt.storage_key)
        if bucket is None:
            return [], 0
        page: _Objects = []
        more = 0
        for _key, obj in bucket.scan(flt.namespace, after):
            if not flt.matches(obj):
                continue
            if limit and len(page) >= limit:
                more += 1
            else:
                page.append(obj)
        return page, more

    def page(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
        *,
        limit: int = 0,
        after: ObjectKey | None = None,
    ) -> tuple[_Objects, int, str]:
        """One page of a LIST for the API: the matching objects as ``rt`` shows them
        (shallow views of the stored objects: read only, serialize them), how many
        more match, and the list's resourceVersion."""
        flt = Filter.build(rt, namespace, label_selector, field_selector)
        found, more = self.select_page(flt, limit, after)
        version = rt.api_version
        return [dict(o, apiVersion=version) for o in found], more, str(self._rv)

    # ----------------------------------------------------------------- writes

    def create(
        self,
        rt: ResourceType,
        obj: dict[str, Any],
        *,
        dry_run: bool = False,
        field_validation: str = admission.WARN,
        field_manager: str | None = None,
        applied_by: str | None = None,
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
                    status_details(rt, name, rt.plural),
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
        applied = copy_json(new) if applied_by else None
        self._defaults(rt, new, None)
        self._run_validation(rt, new, name)
        if applied is not None and applied_by:
            meta["managedFields"] = [fieldmanager.applied_entry(rt, applied, applied_by)]
        elif field_manager:
            meta["managedFields"] = fieldmanager.track_update(rt, None, new, field_manager)
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
        field_manager: str | None = None,
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
        return self._update(rt, old, new, dry_run, field_validation, field_manager)

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
        force: bool = False,
    ) -> dict[str, Any]:
        """Patch an object with one of :data:`PATCH_TYPES` or kubectl's names for them
        (json, merge, strategic, apply); 415 for others, and for
        strategic merge on custom resources, as Kubernetes does). Server-side apply is
        the field manager's (:mod:`kubelab.sandbox.fieldmanager`), conflicts and
        ``force`` included; other writes by a ``field_manager`` are recorded in
        managedFields as its Update."""
        patch_type = patch_type.split(";")[0].strip().lower()
        patch_type = PATCH_ALIASES.get(patch_type, patch_type)
        if patch_type not in PATCH_TYPES or (patch_type == STRATEGIC_MERGE_PATCH and rt.custom):
            raise unsupported_patch(strategic=not rt.custom)
        if patch_type == APPLY_PATCH and subresource is None:
            return self._apply(
                rt, namespace, name, patch, field_manager, force, dry_run, field_validation
            )
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
        return self._update(rt, old, patched, dry_run, field_validation, field_manager)

    def _apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        field_manager: str | None,
        force: bool,
        dry_run: bool,
        field_validation: str,
    ) -> dict[str, Any]:
        """Server-side apply: create, or merge by the field manager's rules."""
        if not field_manager:
            raise invalid_options("fieldManager: Required value: is required for apply patch")
        if not isinstance(patch, dict):
            raise bad_request("apply patch: the body must be an object")
        body = copy_json(patch)
        body.setdefault("metadata", {})
        if not isinstance(body["metadata"], dict):
            raise bad_request("apply patch: metadata must be an object")
        if body["metadata"].get("name", name) != name:
            raise name_mismatch(body["metadata"]["name"], name)
        body["metadata"]["name"] = name
        if rt.namespaced:
            body["metadata"]["namespace"] = namespace
        self._decode(rt, body, field_validation)
        if self._key(rt, namespace, name) not in self._bucket(rt):
            return self.create(
                rt,
                body,
                dry_run=dry_run,
                field_validation=field_validation,
                applied_by=field_manager,
            )
        old = self._current(rt, namespace, name)
        try:
            merged = fieldmanager.apply(
                rt, self._present(rt, old), body, field_manager, force=force
            )
        except fieldmanager.ApplyConflict as clash:
            causes = [
                {"reason": "FieldManagerConflict", "message": f"conflict with {m}", "field": f}
                for m, f in clash.conflicts
            ]
            raise ApiError(409, "Conflict", str(clash), {"causes": causes}) from None
        return self._update(rt, old, merged, dry_run, field_validation)

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
        if propagation_policy == "Foreground":
            # The owner is marked (foregroundDeletion) and answered so; the garbage
            # collector deletes the dependents, then the owner: here at once.
            marked = dict(old, metadata=dict(meta, deletionTimestamp=now_rfc3339()))
            marked["metadata"]["finalizers"] = ["foregroundDeletion"]
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            answer = self._commit(rt, old, marked, False)
            current = self._bucket(rt)[self._key(rt, meta.get("namespace"), meta["name"])]
            self._remove(rt, current, cascade=True)
            return answer
        removed = self._remove(rt, old, cascade=not orphan)
        return self._present(rt, removed)

    def _orphan_dependents(self, uid: str) -> None:
        """What the garbage collector does for propagationPolicy Orphan: the dependents
        lose their ownerReference to ``uid`` and stay."""
        for storage_key, key in self._dependents.of(uid):
            obj = self._objects[storage_key].get(key)
            if obj is None:
                continue
            refs = _meta(obj).get("ownerReferences") or []
            kept = [r for r in refs if not (isinstance(r, dict) and r.get("uid") == uid)]
            freed = dict(obj, metadata=dict(_meta(obj), ownerReferences=kept))
            if not kept:
                del freed["metadata"]["ownerReferences"]
            self._commit(_preferred_for(storage_key), obj, freed, False)

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

    def _bucket(self, rt: ResourceType) -> Bucket:
        bucket = self._objects.get(rt.storage_key)
        if bucket is None:
            bucket = self._objects[rt.storage_key] = Bucket()
        return bucket

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
        denial = admission.istio_denial(rt, obj)
        if denial is not None:
            # A webhook's denial: 400 with no reason, as kube-apiserver relays it.
            raise ApiError(400, "", denial)
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
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """The common tail of replace and patch of the main resource; a
        ``field_manager``'s changes are recorded in managedFields."""
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
        if "managedFields" not in meta and old_meta.get("managedFields"):
            meta["managedFields"] = old_meta["managedFields"]  # omitted: kept, as Kubernetes
        if field_manager:
            meta["managedFields"] = fieldmanager.track_update(rt, old, new, field_manager)
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
        key = self._key(rt, meta.get("namespace"), meta["name"])
        self._bucket(rt)[key] = new
        self._dependents.update(rt.storage_key, key, old, new)
        self._emit("ADDED" if old is None else "MODIFIED", rt, new, old)
        return self._present(rt, new)

    def _remove(self, rt: ResourceType, obj: dict[str, Any], *, cascade: bool) -> dict[str, Any]:
        meta = _meta(obj)
        key = self._key(rt, meta.get("namespace"), meta["name"])
        if self._bucket(rt).get(key) is not obj:
            return obj  # already gone (reached twice through owner references)
        del self._bucket(rt)[key]
        self._dependents.update(rt.storage_key, key, obj, None)
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
        for storage_key, key in self._dependents.of(uid):
            obj = self._objects[storage_key].get(key)
            if obj is not None:
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
