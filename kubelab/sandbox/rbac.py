"""Who a request is from and whether RBAC lets it, as kube-apiserver decides.

The sandbox's admin token is a member of ``system:masters`` and may do anything. A token
from the TokenRequest API is its ServiceAccount's
(``system:serviceaccount:<namespace>:<name>``), and its requests are authorized by the
Roles, ClusterRoles, RoleBindings and ClusterRoleBindings in the store, rule by rule.
That is how a class practises offline with each student's real token: a denied request
is the 403 a real server sends, with the same message.

Every authenticated user may read discovery, OpenAPI and /version, and may create
SelfSubjectAccessReviews and SelfSubjectRulesReviews (``kubectl auth can-i``), as the
default ``system:discovery``, ``system:public-info-viewer`` and ``system:basic-user``
ClusterRoles allow on a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubelab.sandbox import resources
from kubelab.sandbox.errors import ApiError

if TYPE_CHECKING:
    from kubelab.sandbox.store import Store

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
_SELF_REVIEWS = {"selfsubjectaccessreviews", "selfsubjectrulesreviews"}


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]

    @property
    def service_account(self) -> tuple[str, str] | None:
        parts = self.name.split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            return parts[2], parts[3]
        return None


ADMIN = User("kubelab-sandbox-admin", (MASTERS, AUTHENTICATED))


def service_account_user(namespace: str, name: str) -> User:
    return User(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
    )


@dataclass(frozen=True)
class Attributes:
    """One resource request, as the authorizer sees it."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""


def verb_of(method: str, *, named: bool, watch: bool, subresource: str | None) -> str:
    """The RBAC verb of an HTTP request (pods/exec and pods/portforward over a WebSocket
    GET are ``create``, as from Kubernetes 1.30)."""
    if subresource in ("exec", "portforward", "attach"):
        return "create"
    if method in ("GET", "HEAD"):
        return "watch" if watch else "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def allowed(store: Store, user: User, attrs: Attributes) -> bool:
    if MASTERS in user.groups:
        return True
    if (
        attrs.group == "authorization.k8s.io"
        and attrs.resource in _SELF_REVIEWS
        and attrs.verb == "create"
    ):
        return True
    return any(_rule_allows(rule, attrs) for rule in _rules_for(store, user, attrs.namespace))


def rules_for(store: Store, user: User, namespace: str) -> list[dict[str, Any]]:
    """Every rule that applies to ``user`` in ``namespace`` (SelfSubjectRulesReview)."""
    if MASTERS in user.groups:
        return [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
    return list(_rules_for(store, user, namespace))


def _rules_for(store: Store, user: User, namespace: str) -> Iterable[dict[str, Any]]:
    cluster_bindings, _ = store.list(resources.CLUSTERROLEBINDINGS)
    bindings = list(cluster_bindings)
    if namespace:
        namespaced, _ = store.list(resources.ROLEBINDINGS, namespace)
        bindings += namespaced
    for binding in bindings:
        if not any(_subject_matches(s, user, binding) for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        role = _role(store, ref, (binding.get("metadata") or {}).get("namespace"))
        for rule in (role or {}).get("rules") or []:
            if isinstance(rule, dict):
                yield rule


def _role(store: Store, ref: dict[str, Any], namespace: str | None) -> dict[str, Any] | None:
    name = str(ref.get("name", ""))
    try:
        if ref.get("kind") == "Role" and namespace:
            return store.get(resources.ROLES, namespace, name)
        if ref.get("kind") == "ClusterRole":
            return store.get(resources.CLUSTERROLES, None, name)
    except ApiError:
        return None
    return None


def _subject_matches(subject: Any, user: User, binding: dict[str, Any]) -> bool:
    if not isinstance(subject, dict):
        return False
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        account = user.service_account
        namespace = subject.get("namespace") or (binding.get("metadata") or {}).get("namespace")
        return account == (namespace, name)
    return False


def _rule_allows(rule: dict[str, Any], attrs: Attributes) -> bool:
    verbs = rule.get("verbs") or []
    groups = rule.get("apiGroups") or []
    names = rule.get("resources") or []
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if "*" not in groups and attrs.group not in groups:
        return False
    wildcard_sub = attrs.subresource and f"*/{attrs.subresource}" in names
    if "*" not in names and resource not in names and not wildcard_sub:
        return False
    resource_names = rule.get("resourceNames") or []
    return not resource_names or attrs.name in resource_names


def forbidden(user: User, attrs: Attributes) -> ApiError:
    """The 403 kube-apiserver answers, word for word."""
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    what = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    subject = f'{what} "{attrs.name}"' if attrs.name else what
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user.name}" cannot {attrs.verb} resource '
        f'"{resource}" in API group "{attrs.group}" {where}'
    )
    details: dict[str, Any] = {"kind": attrs.resource}
    if attrs.name:
        details = {"name": attrs.name, **details}
    if attrs.group:
        details["group"] = attrs.group
    return ApiError(403, "Forbidden", message, details)
