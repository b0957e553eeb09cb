"""Talking to a Kubernetes API with the official client: read, apply, delete, wait, exec, proxy.

Everything kubelab reads from or writes to a cluster goes through :class:`Kube`. It hides
the client's shape (dynamic discovery of kinds, exec over websockets, the API server's
service proxy, port-forward) and turns failures into kubelab errors that say which
object or cluster was involved. The ``kubernetes`` package is imported on first use only.

Three rules hold for every request:

* **Retries.** Each request goes through :func:`~kubelab.retry.call_with_retry`
  (429 honouring Retry-After, 5xx, dropped connections and read timeouts, with backoff
  under the per-Kube deadline). urllib3's own retries are switched off so there is one
  policy, not two stacked ones.
* **Idempotent writes.** Objects are written with server-side apply (a PATCH that means
  "make it look like this"), never POST, so resending after a lost answer is harmless.
* **No needless writes.** :meth:`Kube.apply` first reads the live object and sends
  nothing when it already holds every applied field (see :func:`contains`); a second
  ``kubelab up`` therefore makes zero mutating calls. :attr:`Kube.mutations` counts the
  writes that were sent.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import copy
import datetime
import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubelab.cluster import portforward as pf
from kubelab.cluster.drift import Drift, contains, differences, owners
from kubelab.errors import KubelabError, KubelabTimeout, SetupError
from kubelab.k8s.workloads import (
    UNKNOWN_KIND_RANK,
    Pending,
    apply_order,
    install_rank,
    rollout_status,
)
from kubelab.retry import (
    NO_RETRY,
    RETRYABLE_STATUSES,
    RetryPolicy,
    Verdict,
    call_with_retry,
    parse_retry_after,
)

FIELD_MANAGER = "kubelab"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
LESSON_LABEL = "kubelab.dev/lesson"
#: On everything ``kubelab class create`` makes: the lesson of the class, the student.
CLASS_LABEL = "kubelab.dev/class"
STUDENT_LABEL = "kubelab.dev/student"
#: A digest of the object as kubelab last applied it (labels included). Stored on the
#: object so that dropping a field from a manifest changes the digest, makes the applied
#: object differ from the live one, and so gets applied (server-side apply then removes
#: the field kubelab no longer sets); a subset check alone cannot see removals.
APPLIED_HASH_ANNOTATION = "kubelab.dev/applied-hash"
WAIT_HINT = "kubelab status --verbose"

CRD_API = "apiextensions.k8s.io/v1"
CRD_KIND = "CustomResourceDefinition"

T = TypeVar("T")

log = logging.getLogger(__name__)


class ClusterUnreachable(SetupError):
    """The API server did not answer (down, wrong address, expired credentials)."""


class AccessDenied(SetupError):
    """The cluster answered 403: these credentials may not do that (RBAC)."""


class KindNotServed(KubelabError):
    """The cluster does not serve this kind (its CRD is not installed)."""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


# -- labels, fingerprints and the no-op test ---------------------------------------------------


def kubelab_labels(lesson_id: str) -> dict[str, str]:
    """The labels on every object kubelab applies for lesson ``lesson_id``; ``down``
    deletes by them."""
    return {MANAGED_BY_LABEL: "kubelab", LESSON_LABEL: lesson_id}


def lesson_selector(lesson_id: str) -> str:
    """The label selector matching what kubelab applied for ``lesson_id``."""
    return f"{MANAGED_BY_LABEL}=kubelab,{LESSON_LABEL}={lesson_id}"


def stamp_labels(obj: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``obj`` carrying ``labels``; its other labels are kept as they are."""
    out = copy.deepcopy(dict(obj))
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    return out


def applied_fingerprint(obj: Mapping[str, Any]) -> str:
    """A digest of ``obj`` (key order and the fingerprint annotation itself ignored)."""
    body = copy.deepcopy(dict(obj))
    annotations = (body.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(APPLIED_HASH_ANNOTATION, None)
        if not annotations:
            body["metadata"].pop("annotations")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def with_fingerprint(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` annotated with its :func:`applied_fingerprint`."""
    out = copy.deepcopy(dict(obj))
    digest = applied_fingerprint(out)
    meta = out.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_HASH_ANNOTATION: digest}
    return out


def _drift(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[Drift]:
    """The changes of ``live`` since kubelab applied ``desired``: none when it is missing
    or carries another rendering's fingerprint (then it is kubelab's to update)."""
    if live is None:
        return []
    applied = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    if applied != desired["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]:
        return []
    return [
        Drift(path, now, wanted, owners(live, path, FIELD_MANAGER))
        for path, now, wanted in differences(live, _comparable(desired))
    ]


def _comparable(desired: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an applied object that the live object must hold for a no-op."""
    want = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "status")}
    if desired.get("kind") == "Secret" and isinstance(want.get("stringData"), dict):
        # stringData is write-only: the server folds it into data, base64-encoded.
        data = dict(want.get("data") or {})
        for key, value in want.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        want["data"] = data
    return want


_POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def with_port_protocols(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` whose Service ports and container ports name their ``protocol``.

    ``protocol`` is a key of those lists (with ``port``/``containerPort``), and API servers
    before v1.21 refuse a server-side apply that leaves it out ("associative list with
    keys has an element that omits key field protocol", a 500). TCP is what every server
    defaults it to, so saying so changes nothing on newer ones."""
    out = copy.deepcopy(dict(obj))
    kind = str(out.get("kind", ""))
    if kind == "Service":
        for port in (out.get("spec") or {}).get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
        return out
    path = _POD_TEMPLATE_PATHS.get(kind)
    spec: Any = out
    for key in path or ():
        spec = spec.get(key) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return out
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            for port in (container or {}).get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
    return out


def _ref(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{str(obj.get('kind', '')).lower()}/{meta.get('name')}" + (f" in {ns}" if ns else "")


def condition_met(obj: Mapping[str, Any] | None, condition: str, want: str = "True") -> bool:
    """Whether ``status.conditions`` of ``obj`` has ``condition`` with status ``want``."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == condition:
            return str(cond.get("status")) == want
    return False


def _timed_dynamic_client(client: Any, timeout: float) -> Any:
    """The client's DynamicClient, except that requests without a timeout get ``timeout``:
    its discovery requests carry none, and a stalled API server would hang them forever."""
    from kubernetes.dynamic import DynamicClient

    class TimedDynamicClient(DynamicClient):
        def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
            params.setdefault("_request_timeout", timeout)
            return super().request(method, path, body, **params)

    return TimedDynamicClient(client)  # type: ignore[no-untyped-call]


def utcnow() -> datetime.datetime:
    """The time now, in UTC (one place, so tests can move the clock)."""
    return datetime.datetime.now(datetime.UTC)


#: A class kubeconfig (``kubelab class create``) names its student, namespace and token
#: expiry in a kubeconfig extension of this name, so a refused token can be explained.
KUBECONFIG_EXTENSION = "kubelab.dev/class"


def kubeconfig_expiry(config: Mapping[str, Any]) -> tuple[str, datetime.datetime] | None:
    """(student id, expiry) of a class kubeconfig, None for any other kubeconfig."""
    for ext in config.get("extensions") or []:
        if isinstance(ext, Mapping) and ext.get("name") == KUBECONFIG_EXTENSION:
            data = ext.get("extension") or {}
            try:
                when = datetime.datetime.strptime(str(data["expires"]), "%Y-%m-%dT%H:%M:%SZ")
            except (KeyError, ValueError):
                return None
            return str(data.get("student", "")), when.replace(tzinfo=datetime.UTC)
    return None


#: The container ``kubectl exec``/``logs`` use when none is named (Istio's injector sets it
#: to the app's container, so the sidecars are never picked by default).
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


def default_container(pod: Mapping[str, Any]) -> str | None:
    """The container kubectl picks in ``pod`` when none is named: the one its
    default-container annotation names, else the first of ``spec.containers``. A real
    API server refuses an exec without a container name in a pod that has several."""
    meta = pod.get("metadata") or {}
    names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
    wanted = (meta.get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION)
    if wanted in names:
        return str(wanted)
    return names[0] if names else None


def upgrade_refusal(exc: Any) -> Any:
    """The API server's answer to a refused exec/attach upgrade as an ``ApiException`` with
    its real status and body; the websocket client reports it as status 0 with the whole
    answer in ``reason`` ("Handshake status 400 Bad Request -+-+- headers -+-+- body")."""
    from kubernetes.client.exceptions import ApiException

    reason = str(getattr(exc, "reason", "") or "")
    if getattr(exc, "status", None) not in (0, None) or not reason.startswith("Handshake status"):
        return exc
    head, _, rest = reason.partition(" -+-+- ")
    words = head.split()
    try:
        code = int(words[2])
    except (IndexError, ValueError):
        return exc
    refused = ApiException(status=code, reason=" ".join(words[3:]) or None)
    refused.body = rest.rpartition(" -+-+- ")[2].strip() if rest else None
    # The upgrade was answered, and refused: the command never started, so sending it
    # again is safe whatever the request (see classify_kube_error).
    refused.never_ran = True  # type: ignore[attr-defined]
    return refused


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 1 else f"{value:g}s"


class Kube:
    """A connection to one cluster, from a kubeconfig file (and optional context).

    ``timeout`` bounds one HTTP request; ``retry`` (deadline, backoff, and the injectable
    sleep/clock that the waits use too) bounds one call with all its retries; ``poll`` is
    the default interval of the ``wait_*`` methods (tests pass 0).
    """

    def __init__(
        self,
        kubeconfig: Path | None = None,
        context: str | None = None,
        timeout: float = 15.0,
        *,
        retry: RetryPolicy | None = None,
        poll: float = 2.0,
        give_up_once_unreachable: bool = False,
    ) -> None:
        self.kubeconfig = kubeconfig
        # Checks: once the API could not be reached, every later request says so at once,
        # instead of each waiting out its own retries (a dead API made `check` take 87 s).
        self.give_up_once_unreachable = give_up_once_unreachable
        self._unreachable: ClusterUnreachable | None = None
        self.context = context
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.poll = poll
        self.mutations = 0  # PATCH/DELETE calls sent (one each, however many attempts)
        self.retries = 0  # attempts that failed transiently and were made again
        self._api_client: Any = None
        self._dynamic: Any = None
        # Reentrant: creating the dynamic client under the lock may need api_client().
        self._lock = threading.RLock()

    # -- clients ---------------------------------------------------------------------------

    def api_client(self) -> Any:
        with self._lock:
            if self._api_client is None:
                from kubernetes import client, config

                configuration = client.Configuration()
                # One retry policy (ours, with a deadline), not urllib3's immediate retries
                # stacked under it: a read timeout would otherwise cost 4 timeouts per try.
                configuration.retries = False
                # Grading runs many checks at once on one Kube: keep their connections.
                configuration.connection_pool_maxsize = 64
                try:
                    self._api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                        config_file=str(self.kubeconfig) if self.kubeconfig else None,
                        context=self.context,
                        client_configuration=configuration,
                    )
                except (config.ConfigException, OSError, TypeError, ValueError) as exc:
                    where = self.kubeconfig or "the default kubeconfig"
                    raise SetupError(
                        f"cannot use {where}: {exc}",
                        hint="Check KUBECONFIG, or run `kubelab status` to see the lesson's "
                        "kubeconfig.",
                    ) from exc
            return self._api_client

    def _host(self) -> str:
        return str(getattr(self.api_client().configuration, "host", "the cluster"))

    def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        client = self.api_client()
        with self._lock:
            if self._dynamic is None:
                # Discovery is several GETs; a transient failure in any retries the lot.
                try:
                    self._dynamic = self._request(
                        lambda _t: _timed_dynamic_client(client, self.timeout),
                        what="API discovery",
                    )
                except ApiException as exc:
                    raise self._api_error(exc, "its API discovery") from exc
        # Search only the kind's own group: a bare "v1" would make the client read every
        # group that serves a v1, and one of them answering 404 (a custom resource
        # definition being deleted, a broken local APIService) would hide Namespace.
        group, _, version = api_version.rpartition("/")
        where = {"prefix": "apis", "group": group} if group else {"prefix": "api"}
        try:
            return self._request(
                lambda _t: self._dynamic.resources.get(**where, api_version=version, kind=kind),
                what=f"API discovery of {kind}",
            )
        except ApiException as exc:
            raise self._api_error(exc, f"API discovery of {kind}") from exc
        except ResourceNotFoundError:
            raise KindNotServed(
                f"the cluster does not serve {kind} ({api_version})",
                hint="Is the component that defines it installed? `kubelab status`",
            ) from None

    def _request(self, fn: Callable[[float], T], *, idempotent: bool = True, what: str = "") -> T:
        """``fn(request_timeout)`` under the retry policy; transport errors that outlast it
        become :class:`ClusterUnreachable`. API errors (``ApiException``) propagate for the
        caller to map, since only it knows that a 404 means "absent"."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        if self._unreachable is not None:
            raise ClusterUnreachable(self._unreachable.message, hint=self._unreachable.hint)
        attempts = 0
        start = self.retry.clock()

        def attempt(remaining: float) -> T:
            nonlocal attempts
            attempts += 1
            # Never let one request outlive the call's deadline.
            return fn(max(min(self.timeout, remaining), 0.001))

        answered: list[BaseException] = []  # the server's last answer (a 503, say)

        def note_retry(n: int, exc: BaseException, delay: float) -> None:
            with self._lock:
                self.retries += 1
            if isinstance(exc, ApiException):
                answered[:] = [exc]
            log.debug("%s: attempt %d failed (%s); retrying in %.2fs", what, n, exc, delay)

        try:
            return call_with_retry(
                attempt,
                self.retry,
                functools.partial(classify_kube_error, idempotent=idempotent),
                on_retry=note_retry,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if answered and isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
                # The server did answer before; the last attempt only ran out of the little
                # time the deadline left it. Its answer says why (no endpoints, overloaded),
                # "cannot reach the API" would not.
                raise answered[0] from exc
            spent = self.retry.clock() - start
            tries = f" (gave up after {attempts} attempts in {spent:.0f}s)" if attempts > 1 else ""
            unreachable = ClusterUnreachable(
                f"cannot reach the Kubernetes API at {self._host()}: {type(exc).__name__}{tries}",
                hint="Is the cluster (or the sandbox) running? `kubelab status` tells.",
            )
            if self.give_up_once_unreachable:
                self._unreachable = unreachable
            raise unreachable from exc

    def _mutated(self) -> None:
        with self._lock:
            self.mutations += 1

    # -- reading ---------------------------------------------------------------------------

    def version(self) -> str:
        """The API server's version (``gitVersion``, e.g. ``v1.31.4``); the cheapest call
        that proves the cluster answers and the credentials are accepted."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = client.VersionApi(self.api_client())
        try:
            info = self._request(lambda t: api.get_code(_request_timeout=t), what="version")
        except ApiException as exc:
            raise self._api_error(exc, "its version") from exc
        return str(getattr(info, "git_version", "") or "")

    def create_token(
        self, namespace: str, service_account: str, seconds: int
    ) -> tuple[str, datetime.datetime]:
        """A token of ``service_account`` from the TokenRequest API, valid ``seconds``
        (the server may shorten it): ``(token, expiry)``. Nothing is stored in the cluster."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = client.CoreV1Api(self.api_client())
        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
        )
        what = f"a token for serviceaccount {namespace}/{service_account}"
        try:
            answer = self._request(
                lambda t: api.create_namespaced_service_account_token(
                    service_account, namespace, body, _request_timeout=t
                ),
                what=what,
            )
        except ApiException as exc:
            raise self._api_error(exc, what) from exc
        status = answer.status
        if status is None or not status.token or status.expiration_timestamp is None:
            raise KubelabError(f"the cluster gave no token for {what[6:]}")
        expires: datetime.datetime = status.expiration_timestamp
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=datetime.UTC)
        return str(status.token), expires

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object as a dict, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        resource = self._resource(api_version, kind)
        try:
            return self._get(resource, name, namespace)
        except ApiException as exc:
            raise self._api_error(exc, f"{kind} {name}") from exc

    def _get(self, resource: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._request(
                lambda t: resource.get(name=name, namespace=namespace, _request_timeout=t),
                what=f"get {resource.kind} {name}",
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        result: dict[str, Any] = obj.to_dict()
        return result

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str = "",
    ) -> builtins.list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        resource = self._resource(api_version, kind)
        try:
            result = self._request(
                lambda t: resource.get(
                    namespace=namespace if resource.namespaced else None,
                    label_selector=label_selector or None,
                    _request_timeout=t,
                ),
                what=f"list {kind}",
            )
        except ApiException as exc:
            raise self._api_error(exc, f"{kind} list") from exc
        items: builtins.list[dict[str, Any]] = result.to_dict().get("items") or []
        return items

    # -- writing ---------------------------------------------------------------------------

    def apply(
        self,
        obj: Mapping[str, Any],
        field_manager: str = FIELD_MANAGER,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` (created when missing, else merged; kubelab owns its
        fields) and return the live object.

        ``labels`` (e.g. :func:`kubelab_labels`) are added to the object's own. Nothing is
        sent when the live object already holds every field of the applied one, including
        the :data:`APPLIED_HASH_ANNOTATION` digest that kubelab stamps on it.
        """
        desired, resource, namespace = self._target(obj, labels)
        live = self._live(resource, desired, namespace)
        return self._send(desired, resource, namespace, live, field_manager)

    def drift(self, obj: Mapping[str, Any]) -> builtins.list[Drift]:
        """The fields of ``obj``'s live object changed by someone else since kubelab applied
        this same rendering (empty when it is missing, unchanged, or rendered differently
        now: then :meth:`apply` brings it up to date)."""
        desired, resource, namespace = self._target(obj, None)
        return _drift(desired, self._live(resource, desired, namespace))

    def apply_keeping_changes(
        self, obj: Mapping[str, Any], *, reset: bool = False
    ) -> builtins.list[Drift]:
        """Apply ``obj`` unless its live object was changed since kubelab applied this same
        rendering (:meth:`drift`); return those changes. ``reset`` overwrites what people
        changed (kubectl), never what a controller such as Flagger or Argo Rollouts set."""
        desired, resource, namespace = self._target(obj, None)
        live = self._live(resource, desired, namespace)
        changed = _drift(desired, live)
        if not changed or (reset and not any(d.by_controller for d in changed)):
            self._send(desired, resource, namespace, live, FIELD_MANAGER)
        return changed

    def _target(
        self, obj: Mapping[str, Any], labels: Mapping[str, str] | None
    ) -> tuple[dict[str, Any], Any, str | None]:
        """What kubelab applies for ``obj`` (labels, port protocols, fingerprint), its API
        resource and its namespace (None for a cluster-scoped kind)."""
        desired = with_fingerprint(with_port_protocols(stamp_labels(obj, labels or {})))
        meta = desired["metadata"]
        resource = self._resource(desired["apiVersion"], desired["kind"])
        namespace = (meta.get("namespace") or "default") if resource.namespaced else None
        return desired, resource, namespace

    def _live(
        self, resource: Any, desired: Mapping[str, Any], namespace: str | None
    ) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._get(resource, desired["metadata"]["name"], namespace)
        except ApiException:
            return None  # cannot read it (RBAC?): let the apply itself succeed or say why

    def _send(
        self,
        desired: dict[str, Any],
        resource: Any,
        namespace: str | None,
        live: dict[str, Any] | None,
        field_manager: str,
    ) -> dict[str, Any]:
        """Server-side apply ``desired`` unless ``live`` already holds all of it."""
        from kubernetes.client.exceptions import ApiException

        name = desired["metadata"]["name"]
        what = f"{desired['kind']} {name}"
        if live is not None and contains(live, _comparable(desired)):
            log.debug("%s is up to date; not applied", what)
            return live
        self._mutated()
        try:
            result = self._request(
                lambda t: resource.server_side_apply(
                    body=desired,
                    name=name,
                    namespace=namespace,
                    field_manager=field_manager,
                    force_conflicts=True,
                    _request_timeout=t,
                ),
                what=f"apply {what}",
            )
        except ApiException as exc:
            raise self._api_error(exc, what, verb="apply") from exc
        applied: dict[str, Any] = result.to_dict()
        return applied

    def apply_all(
        self,
        objects: Iterable[Mapping[str, Any]],
        *,
        labels: Mapping[str, str] | None = None,
        crd_timeout: float = 60.0,
    ) -> builtins.list[dict[str, Any]]:
        """Apply ``objects`` in :func:`apply_order` and return the live objects (in that
        order). Custom resources wait until the CRDs applied before them are Established,
        so the API serves their kind."""
        ordered = apply_order(objects)
        results: builtins.list[dict[str, Any]] = []
        crds: builtins.list[str] = []
        crds_ready = False
        for obj in ordered:
            kind = str(obj.get("kind", ""))
            if crds and not crds_ready and install_rank(kind) == UNKNOWN_KIND_RANK:
                for crd in crds:
                    self.wait_condition(CRD_API, CRD_KIND, crd, None, "Established", crd_timeout)
                crds_ready = True
            results.append(self.apply(obj, labels=labels))
            if kind == CRD_KIND:
                crds.append(str((obj.get("metadata") or {}).get("name")))
        return results

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object (dependents in the background); False when it was already gone."""
        resource = self._resource(api_version, kind)
        return self._delete(resource, name, namespace if resource.namespaced else None)

    def delete_objects(self, objects: Iterable[Mapping[str, Any]]) -> builtins.list[str]:
        """Delete each of ``objects`` (by apiVersion, kind, name, namespace); a kind the
        cluster no longer serves has nothing left to delete. Returns ``kind/name`` of each
        object that was there."""
        removed = []
        for obj in objects:
            meta = obj.get("metadata") or {}
            try:
                if self.delete(
                    str(obj.get("apiVersion")),
                    str(obj.get("kind")),
                    str(meta.get("name")),
                    meta.get("namespace"),
                ):
                    removed.append(f"{obj.get('kind')}/{meta.get('name')}")
            except KindNotServed:
                continue
        return removed

    def _delete(self, resource: Any, name: str, namespace: str | None) -> bool:
        from kubernetes.client.exceptions import ApiException

        attempts = 0

        def send(timeout: float) -> Any:
            nonlocal attempts
            attempts += 1
            return resource.delete(
                name=name,
                namespace=namespace,
                propagation_policy="Background",
                _request_timeout=timeout,
            )

        self._mutated()
        try:
            self._request(send, what=f"delete {resource.kind} {name}")
        except ApiException as exc:
            if exc.status == 404:
                # After a lost answer the retry finds it gone: our first attempt deleted it.
                return attempts > 1
            raise self._api_error(exc, f"{resource.kind} {name}", verb="delete") from exc
        return True

    def delete_by_label(
        self,
        selector: str,
        kinds: Sequence[tuple[str, str]],
        namespace: str | None = None,
        *,
        timeout: float = 120.0,
        poll: float | None = None,
    ) -> builtins.list[str]:
        """Delete every object of ``kinds`` ((apiVersion, kind) pairs) matching the label
        ``selector`` (in ``namespace``, else everywhere), then wait until they are gone.

        Kinds go in reverse apply order (custom resources first, namespaces last); kinds
        the cluster does not serve are skipped. Returns what was deleted, as
        ``kind/name in namespace`` strings.
        """
        if not selector.strip():
            # An empty selector matches everything: never what `down` means.
            raise ValueError("delete_by_label needs a non-empty label selector")
        ordered = sorted(kinds, key=lambda k: install_rank(k[1]), reverse=True)
        served: builtins.list[tuple[str, str]] = []
        deleted: builtins.list[str] = []
        for api_version, kind in ordered:
            try:
                resource = self._resource(api_version, kind)
            except KindNotServed:
                continue
            served.append((api_version, kind))
            for item in self.list(api_version, kind, namespace, selector):
                meta = item.get("metadata") or {}
                item_ns = meta.get("namespace") if resource.namespaced else None
                if self._delete(resource, meta["name"], item_ns):
                    deleted.append(_ref({"kind": kind, "metadata": meta}))

        def leftovers() -> Pending | bool:
            left = [
                _ref({**item, "kind": kind})
                for api_version, kind in served
                for item in self.list(api_version, kind, namespace, selector)
            ]
            if left:
                return Pending(f"{len(left)} still there: {', '.join(left[:5])}")
            return True

        self.wait_for(
            leftovers,
            timeout=timeout,
            poll=poll,
            what=f"objects labelled {selector} to be deleted",
            namespace=namespace,
        )
        return deleted

    def _expired_class_kubeconfig(self) -> tuple[str, str] | None:
        """(message, hint) when this is a class kubeconfig whose token has expired."""
        if self.kubeconfig is None:
            return None
        try:
            import yaml

            found = kubeconfig_expiry(yaml.safe_load(self.kubeconfig.read_text()) or {})
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            return None
        if found is None:
            return None
        student, expires = found
        if expires > utcnow() + datetime.timedelta(seconds=5):
            return (
                f"the cluster refused the token of {self.kubeconfig} (student {student}) "
                f"although it is valid until {expires:%Y-%m-%d %H:%M} UTC",
                "The class may have been re-created; ask your instructor for a new kubeconfig.",
            )
        return (
            f"your class kubeconfig {self.kubeconfig} (student {student}) expired at "
            f"{expires:%Y-%m-%d %H:%M} UTC",
            f"Ask your instructor for a new one: `kubelab class kubeconfigs --student {student}`.",
        )

    def _api_error(self, exc: Any, what: str, verb: str = "show") -> KubelabError:
        if exc.status == 401:
            expired = self._expired_class_kubeconfig()
            if expired:
                return SetupError(expired[0], hint=expired[1])
        if exc.status in (401, 403):
            refused = AccessDenied if exc.status == 403 else SetupError
            return refused(
                f"the cluster refused to {verb} {what} ({exc.status} {exc.reason})",
                hint="Your credentials may have expired or lack rights; ask the instructor.",
            )
        if not exc.status:  # no HTTP answer: the client's own failure, in `reason`
            reason = str(exc.reason or "")
            if "CERTIFICATE_VERIFY_FAILED" in reason:
                why = reason.partition("certificate verify failed:")[2].split("(")[0].strip()
                return SetupError(
                    f"the cluster's TLS certificate is not trusted ({why or 'verify failed'}) "
                    f"while reading {what}",
                    hint="The kubeconfig's CA or the server's certificate is wrong or has "
                    "expired: get a fresh kubeconfig from whoever runs the cluster (kubelab "
                    "cluster kubeconfig, or kubelab class kubeconfigs for a class).",
                )
            return SetupError(
                f"no answer from the cluster for {what}: {reason.split(':')[0] or 'no reason'}",
                hint="Check that the cluster is running and reachable from here.",
            )
        detail = ""
        with contextlib.suppress(ValueError, AttributeError):
            body = json.loads(exc.body or "{}")
            # A Kubernetes Status has "message"; a service reached through the API server's
            # proxy (VictoriaMetrics, Jaeger) says what went wrong in "error".
            detail = body.get("message") or body.get("error") or ""
        message = f"the cluster answered {exc.status} {exc.reason} for {what}"
        return KubelabError(f"{message}: {detail}" if detail else message)

    # -- waiting ---------------------------------------------------------------------------

    def wait_for(
        self,
        fn: Callable[[], T | Pending | None],
        *,
        timeout: float,
        what: str,
        namespace: str | None = None,
        poll: float | None = None,
    ) -> T:
        """Call ``fn`` every ``poll`` seconds (default: this Kube's) until it returns a
        truthy value, and return it; :class:`KubelabTimeout` after ``timeout`` seconds,
        naming ``what`` and the last :class:`Pending` reason ``fn`` gave."""
        interval = self.poll if poll is None else poll
        clock, sleep = self.retry.clock, self.retry.sleep
        start = clock()
        while True:
            value = fn()
            if value and not isinstance(value, Pending):
                return value
            if clock() - start >= timeout:
                where = f" in namespace {namespace}" if namespace else ""
                seen = f": {value.reason}" if isinstance(value, Pending) and value.reason else ""
                raise KubelabTimeout(
                    f"timed out waiting for {what}{where} ({_seconds(timeout)}){seen}. "
                    f"Try: {WAIT_HINT}"
                )
            sleep(interval)

    def wait_rollout(
        self,
        kind: str,
        name: str,
        namespace: str,
        *,
        timeout: float = 300.0,
        poll: float | None = None,
    ) -> dict[str, Any]:
        """Wait until a Deployment, StatefulSet or DaemonSet has rolled out (the test of
        ``kubectl rollout status``) and return it."""
        if kind not in ("Deployment", "StatefulSet", "DaemonSet"):
            raise ValueError(f"no rollout status for kind {kind}")

        def done() -> dict[str, Any] | Pending:
            obj = self.get("apps/v1", kind, name, namespace)
            pending = rollout_status(kind, obj)
            if pending is not None:  # (a Pending is falsy: test it against None)
                return pending
            assert obj is not None  # rollout_status returns None only for an object
            return obj

        return self.wait_for(
            done, timeout=timeout, poll=poll, what=f"{kind.lower()}/{name}", namespace=namespace
        )

    def wait_condition(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        condition: str,
        timeout: float = 120.0,
        *,
        status: str = "True",
        poll: float | None = None,
    ) -> dict[str, Any]:
        """Wait until the object has ``status.conditions[type=condition].status == status``
        and return it (e.g. a CRD ``Established``, a Deployment ``Available``)."""

        def met() -> dict[str, Any] | Pending:
            obj = self.get(api_version, kind, name, namespace)
            if obj is None:
                return Pending("it does not exist yet")
            if condition_met(obj, condition, status):
                return obj
            return Pending(f"condition {condition} is not {status} yet")

        return self.wait_for(
            met,
            timeout=timeout,
            poll=poll,
            what=f"{kind.lower()}/{name} to be {condition}",
            namespace=namespace,
        )

    # -- exec, proxy and port-forward --------------------------------------------------------

    def exec(
        self,
        namespace: str,
        pod: str,
        command: builtins.list[str],
        container: str | None = None,
        timeout: float = 60.0,
    ) -> ExecResult:
        """Run ``command`` in a pod's container and collect its output and exit code.

        Without ``container``, the one kubectl would pick (:func:`default_container`)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        if not container:
            found = self.get("v1", "Pod", pod, namespace)
            if found is None:
                raise KubelabError(
                    f"pod {pod} not found in namespace {namespace}",
                    hint=f"kubectl get pods -n {namespace}",
                )
            container = default_container(found)
        core = client.CoreV1Api(self.api_client())
        kwargs: dict[str, Any] = {
            "command": command,
            "stderr": True,
            "stdin": False,
            "stdout": True,
            "tty": False,
            "_preload_content": False,
        }
        if container:
            kwargs["container"] = container

        def open_stream(_timeout: float) -> Any:
            try:
                return stream(core.connect_get_namespaced_pod_exec, pod, namespace, **kwargs)
            except ApiException as exc:
                raise upgrade_refusal(exc) from exc

        try:
            # Not idempotent (the command may have run): only never-sent requests and
            # refused upgrades retry.
            resp = self._request(open_stream, idempotent=False, what=f"exec in {namespace}/{pod}")
        except ApiException as exc:
            raise self._api_error(exc, f"exec in pod {namespace}/{pod}") from exc
        out: builtins.list[str] = []
        err: builtins.list[str] = []
        try:
            resp.run_forever(timeout=timeout)
            out.append(resp.read_stdout() or "")
            err.append(resp.read_stderr() or "")
            code = resp.returncode
        finally:
            resp.close()
        return ExecResult(code if code is not None else -1, "".join(out), "".join(err))

    def service_proxy_get(
        self, namespace: str, service: str, port: int, path: str, params: dict[str, str]
    ) -> str:
        """GET ``path`` on a Service through the API server's proxy (no port-forward needed)."""
        from kubernetes.client.exceptions import ApiException

        api = self.api_client()
        url = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"
        query = builtins.list(params.items())

        def send(timeout: float) -> bytes:
            if hasattr(api, "param_serialize"):
                # kubernetes >= 35 (the newer generator): serialize, send, and raise on a
                # non-2xx answer ourselves, as its dynamic client does.
                request = api.param_serialize(
                    "GET", url, query_params=query, auth_settings=["BearerToken"]
                )
                response = api.call_api(*request, _request_timeout=timeout)
                response.read()
                if not 200 <= response.status <= 299:
                    raise ApiException(http_resp=response)
                return bytes(response.data)
            data = api.call_api(
                url,
                "GET",
                query_params=query,
                response_type="str",
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
            return bytes(data[0].data)

        try:
            body = self._request(send, what=f"proxy to service {namespace}/{service}")
        except ApiException as exc:
            answer = _service_answer(exc)
            if answer is not None:
                return answer
            raise self._api_error(exc, f"service {namespace}/{service}") from exc
        return body.decode("utf-8", "replace")

    def forward_target(self, namespace: str, target: str, remote_port: int) -> tuple[str, int]:
        """The pod and container port that ``port_forward(namespace, target, remote_port)``
        reaches: a ready pod behind a Service (its targetPort), or the named Pod itself."""
        kind, name = pf.parse_target(target)
        if kind in ("service", ""):
            service = self.get("v1", "Service", name, namespace)
            if service is not None:
                selector = (service.get("spec") or {}).get("selector") or {}
                if not selector:
                    raise pf.PortForwardError(
                        f"service {namespace}/{name} has no selector: no pod to forward to"
                    )
                labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
                pod = pf.pick_pod(
                    self.list("v1", "Pod", namespace, labels), f"service {namespace}/{name}"
                )
                port = pf.container_port(pod, pf.service_target_port(service, remote_port))
                return pod["metadata"]["name"], port
            if kind == "service":
                raise pf.PortForwardError(f"service {name} not found in namespace {namespace}")
        pod_obj = self.get("v1", "Pod", name, namespace)
        if pod_obj is None:
            raise pf.PortForwardError(f"no service or pod named {name} in namespace {namespace}")
        ready = pf.pick_pod([pod_obj], f"pod {namespace}/{name}")
        return name, pf.container_port(ready, remote_port)

    def _open_forward_stream(self, namespace: str, pod: str, port: int) -> pf.Stream:
        """One new stream to ``pod:port`` through the API server (the only real-client part
        of port-forwarding; the sandbox API does not serve it)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import portforward

        core = client.CoreV1Api(self.api_client())
        try:
            forwarder = self._request(
                lambda _t: portforward(
                    core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
                ),
                what=f"port-forward to {namespace}/{pod}:{port}",
            )
        except ApiException as exc:
            raise self._api_error(exc, f"port-forward to pod {namespace}/{pod}") from exc
        stream: pf.Stream = forwarder.socket(port)
        return stream

    @contextlib.contextmanager
    def port_forward(
        self, namespace: str, service_or_pod: str, remote_port: int, local_port: int = 0
    ) -> Iterator[int]:
        """Forward 127.0.0.1:<port> to ``service_or_pod`` (``svc/NAME``, ``pod/NAME``, or a
        bare name: a Service, else a Pod) port ``remote_port``, and yield the local port."""
        pod, port = self.forward_target(namespace, service_or_pod, remote_port)
        connect = functools.partial(self._open_forward_stream, namespace, pod, port)
        with pf.forward(connect, local_port) as local:
            yield local


# -- what is transient for the Kubernetes client -----------------------------------------


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    if isinstance(headers, Mapping) or hasattr(headers, "get"):
        value = headers.get(name)
        if value is None:
            value = headers.get(name.lower())
        return None if value is None else str(value)
    return None


def classify_kube_error(exc: BaseException, *, idempotent: bool = True) -> Verdict:
    """The retry verdict for an exception raised by the ``kubernetes`` client (or urllib3
    under it). Imports are local: this module is imported by the CLI's fast paths."""
    import urllib3.exceptions as u3
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if getattr(exc, "never_ran", False):
            idempotent = True  # a refused exec upgrade: nothing was run
        if status == 429:
            # Too Many Requests is refused before any work is done: safe for any request.
            after = parse_retry_after(_header(exc.headers, "Retry-After"))
            return Verdict(True, after, "429 Too Many Requests")
        if status == 500 and "failed to create typed patch object" in str(exc.body or ""):
            # A server-side apply the server cannot merge (a schema it does not know):
            # the same body fails the same way every time.
            return NO_RETRY
        if status in RETRYABLE_STATUSES and idempotent:
            after = parse_retry_after(_header(exc.headers, "Retry-After"))
            return Verdict(True, after, str(status))
        return NO_RETRY
    if isinstance(exc, u3.MaxRetryError) and exc.reason is not None:
        return classify_kube_error(exc.reason, idempotent=idempotent)
    if isinstance(exc, u3.SSLError):
        return NO_RETRY  # a certificate problem does not go away by asking again
    # Never connected: the request cannot have reached the server.
    if isinstance(exc, u3.NewConnectionError | u3.ConnectTimeoutError | ConnectionRefusedError):
        return Verdict(True, None, type(exc).__name__)
    # Sent, then lost (reset, timed out, half an answer): the server may have acted on it.
    if isinstance(
        exc,
        u3.ReadTimeoutError | u3.ProtocolError | ConnectionError | TimeoutError,
    ):
        return Verdict(idempotent, None, type(exc).__name__)
    return NO_RETRY


def _service_answer(exc: Any) -> str | None:
    """The proxied service's own 4xx answer (a Prometheus or Jaeger error that says what is
    wrong with the query), or None when the API server itself refused (its answers are
    ``Status`` objects: the Service missing, no endpoints, RBAC)."""
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    if not isinstance(status, int) or not 400 <= status < 500 or not body:
        return None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get("kind") == "Status":
        return None
    return text
