"""The resource types the sandbox API serves, and how to look them up.

One :class:`ResourceType` per served group/version/resource. The store keeps one copy of
each object per ``(group, plural)`` (its :attr:`ResourceType.storage_key`), so a kind
served in several versions (Istio's v1, v1beta1 and v1alpha3) is the same object seen
under different ``apiVersion`` strings; the first version registered is the preferred
one. Discovery (``kubelab.sandbox.api_discovery``), the HTTP paths and the printed
tables are all derived from :data:`RESOURCE_TYPES`, so serving another kind is one more
line in :func:`_registry`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)

# Groups served by kube-apiserver itself; everything else is a CustomResourceDefinition in
# a real cluster, which matters for strategic merge patch (415 for custom resources).
BUILTIN_GROUPS = frozenset(
    {
        "",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        "storage.k8s.io",
        "authorization.k8s.io",
        "apiextensions.k8s.io",
    }
)


@dataclass(frozen=True)
class PrinterColumn:
    """A column of ``kubectl get`` for a custom resource (a CRD's additionalPrinterColumns)."""

    name: str
    json_path: str  # simple dotted path, e.g. ".spec.hosts"
    type: str = "string"  # string | integer | number | boolean | date
    priority: int = 0  # 0: always shown; 1: only with -o wide


@dataclass(frozen=True)
class ResourceType:
    """One resource as served at ``/api(s)/{group}/{version}/.../{plural}``."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects of every served version of one resource share this key in the store."""
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        """``virtualservices.networking.istio.io`` / ``pods``, as in API error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``VirtualService.networking.istio.io`` / ``Pod``, as in "is invalid" messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def custom(self) -> bool:
        """True for kinds a real cluster serves through a CustomResourceDefinition."""
        return self.group not in BUILTIN_GROUPS


def _crd(
    group: str,
    versions: Iterable[str],
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short_names: tuple[str, ...] = (),
    subresources: tuple[str, ...] = ("status",),
    categories: tuple[str, ...] = (),
    columns: tuple[PrinterColumn, ...] = (),
) -> list[ResourceType]:
    """Every served version of one custom resource, preferred (storage) version first."""
    age = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
    return [
        ResourceType(
            group,
            version,
            kind,
            plural,
            namespaced,
            short_names,
            subresources=subresources,
            categories=categories,
            printer_columns=(*columns, age),
        )
        for version in versions
    ]


_ISTIO = ("v1", "v1beta1", "v1alpha3")
_ISTIO_CATEGORIES = ("istio-io", "networking-istio-io")
_ALL = ("all",)


def _c(name: str, path: str, type_: str = "string", priority: int = 0) -> PrinterColumn:
    return PrinterColumn(name, path, type_, priority)


def _registry() -> tuple[ResourceType, ...]:
    rt = ResourceType
    return (
        # core/v1
        rt("", "v1", "Namespace", "namespaces", False, ("ns",), subresources=("status",)),
        rt(
            "",
            "v1",
            "Pod",
            "pods",
            short_names=("po",),
            subresources=("status", "log", "exec", "portforward"),
            categories=_ALL,
        ),
        rt(
            "",
            "v1",
            "Service",
            "services",
            short_names=("svc",),
            subresources=("status",),
            categories=_ALL,
        ),
        rt("", "v1", "Endpoints", "endpoints", short_names=("ep",)),
        rt("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
        rt(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            short_names=("pvc",),
            subresources=("status",),
        ),
        rt(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            namespaced=False,
            short_names=("pv",),
            subresources=("status",),
        ),
        rt("", "v1", "Secret", "secrets"),
        rt(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            short_names=("sa",),
            subresources=("token",),
        ),
        rt("", "v1", "Event", "events", short_names=("ev",)),
        # Stored and served, not enforced: the sandbox has one user and runs one copy of
        # the app, so a class's quota and limit ranges (kubelab.classroom.access) have
        # nothing to bound there. A real API server enforces them.
        rt(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            short_names=("quota",),
            subresources=("status",),
        ),
        rt("", "v1", "LimitRange", "limitranges", short_names=("limits",)),
        # A class's NetworkPolicy (kubelab.classroom.access), stored and served too: the
        # sandbox's pods share one loopback network, where nothing could enforce it.
        rt(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            short_names=("netpol",),
        ),
        # apps/v1, batch/v1
        rt(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            short_names=("deploy",),
            subresources=("status", "scale"),
            categories=_ALL,
        ),
        rt(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            short_names=("rs",),
            subresources=("status", "scale"),
            categories=_ALL,
        ),
        rt("batch", "v1", "Job", "jobs", subresources=("status",), categories=_ALL),
        # rbac.authorization.k8s.io/v1
        rt("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        rt("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        rt("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
        rt("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
        # events.k8s.io/v1 (its own store here: an Event written through one API is not
        # seen through the other, unlike on a real cluster)
        rt("events.k8s.io", "v1", "Event", "events", short_names=("ev",)),
        # apiextensions.k8s.io/v1: the custom kinds above, described (read-only)
        rt(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            False,
            short_names=("crd", "crds"),
            verbs=("get", "list"),
        ),
        # authorization.k8s.io/v1: asked, never stored (kubectl auth can-i)
        rt(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            False,
            verbs=("create",),
        ),
        rt(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            False,
            verbs=("create",),
        ),
        # Istio: one storage, served as v1 (preferred), v1beta1 and v1alpha3.
        *_crd(
            "networking.istio.io",
            _ISTIO,
            "VirtualService",
            "virtualservices",
            short_names=("vs",),
            categories=_ISTIO_CATEGORIES,
            columns=(_c("Gateways", ".spec.gateways"), _c("Hosts", ".spec.hosts")),
        ),
        *_crd(
            "networking.istio.io",
            _ISTIO,
            "DestinationRule",
            "destinationrules",
            short_names=("dr",),
            categories=_ISTIO_CATEGORIES,
            columns=(_c("Host", ".spec.host"),),
        ),
        *_crd(
            "networking.istio.io",
            _ISTIO,
            "Gateway",
            "gateways",
            short_names=("gw",),
            categories=_ISTIO_CATEGORIES,
        ),
        *_crd(
            "networking.istio.io",
            _ISTIO,
            "ServiceEntry",
            "serviceentries",
            short_names=("se",),
            categories=_ISTIO_CATEGORIES,
            columns=(
                _c("Hosts", ".spec.hosts"),
                _c("Location", ".spec.location"),
                _c("Resolution", ".spec.resolution"),
            ),
        ),
        # The rest of Istio's API kubelab applies (mesh-wide tracing, mTLS, policies)
        *_crd(
            "telemetry.istio.io",
            ("v1", "v1alpha1"),
            "Telemetry",
            "telemetries",
            short_names=("telemetry",),
            categories=_ISTIO_CATEGORIES,
        ),
        *_crd(
            "security.istio.io",
            ("v1", "v1beta1"),
            "PeerAuthentication",
            "peerauthentications",
            short_names=("pa",),
            categories=_ISTIO_CATEGORIES,
        ),
        *_crd(
            "security.istio.io",
            ("v1", "v1beta1"),
            "AuthorizationPolicy",
            "authorizationpolicies",
            short_names=("ap",),
            categories=_ISTIO_CATEGORIES,
        ),
        # cert-manager (--tls)
        *_crd("cert-manager.io", ("v1",), "ClusterIssuer", "clusterissuers", namespaced=False),
        *_crd("cert-manager.io", ("v1",), "Certificate", "certificates", short_names=("cert",)),
        # Flagger
        *_crd(
            "flagger.app",
            ("v1beta1",),
            "Canary",
            "canaries",
            categories=_ALL,
            columns=(
                _c("Status", ".status.phase"),
                _c("Weight", ".status.canaryWeight"),
                _c("LastTransitionTime", ".status.lastTransitionTime"),
            ),
        ),
        *_crd(
            "flagger.app",
            ("v1beta1",),
            "MetricTemplate",
            "metrictemplates",
            categories=_ALL,
            columns=(_c("Provider", ".spec.provider.type"),),
        ),
        *_crd(
            "flagger.app",
            ("v1beta1",),
            "AlertProvider",
            "alertproviders",
            categories=_ALL,
            columns=(_c("Type", ".spec.type"),),
        ),
        # Argo Rollouts
        *_crd(
            "argoproj.io",
            ("v1alpha1",),
            "Rollout",
            "rollouts",
            short_names=("ro",),
            subresources=("status", "scale"),
            columns=(
                _c("Desired", ".spec.replicas", "integer"),
                _c("Current", ".status.replicas", "integer"),
                _c("Up-to-date", ".status.updatedReplicas", "integer"),
                _c("Available", ".status.availableReplicas", "integer"),
            ),
        ),
        *_crd(
            "argoproj.io",
            ("v1alpha1",),
            "AnalysisTemplate",
            "analysistemplates",
            short_names=("at",),
            subresources=(),
        ),
        *_crd(
            "argoproj.io",
            ("v1alpha1",),
            "ClusterAnalysisTemplate",
            "clusteranalysistemplates",
            namespaced=False,
            short_names=("cat",),
            subresources=(),
        ),
        *_crd(
            "argoproj.io",
            ("v1alpha1",),
            "AnalysisRun",
            "analysisruns",
            short_names=("ar",),
            subresources=(),
            columns=(_c("Status", ".status.phase"),),
        ),
        *_crd(
            "argoproj.io",
            ("v1alpha1",),
            "Experiment",
            "experiments",
            short_names=("exp",),
            subresources=(),
            columns=(_c("Status", ".status.phase"),),
        ),
    )


RESOURCE_TYPES: tuple[ResourceType, ...] = _registry()

_BY_PLURAL = {(r.group, r.version, r.plural): r for r in RESOURCE_TYPES}
_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCE_TYPES}
_PREFERRED: dict[tuple[str, str], ResourceType] = {}
for _r in RESOURCE_TYPES:
    _PREFERRED.setdefault(_r.storage_key, _r)


def by_plural(group: str, version: str, plural: str) -> ResourceType | None:
    """The type served at ``/apis/{group}/{version}/{plural}`` (``group`` "" for core)."""
    return _BY_PLURAL.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType:
    """The type of an object with this ``apiVersion`` and ``kind``; KeyError if not served."""
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise KeyError(f"the sandbox does not serve {kind} in {api_version}") from None


def find_kind(api_version: str, kind: str) -> ResourceType | None:
    """Like :func:`by_kind`, None when not served."""
    return _BY_KIND.get((api_version, kind))


def preferred(rt: ResourceType) -> ResourceType:
    """The preferred (storage) version of ``rt``'s resource; watch events carry this one."""
    return _PREFERRED[rt.storage_key]


def namespaced_types() -> list[ResourceType]:
    """The preferred version of every namespaced resource (what a namespace deletion empties)."""
    return [r for r in _PREFERRED.values() if r.namespaced]


@functools.cache
def group_versions() -> dict[str, list[str]]:
    """Served versions per group, preferred version first, in registry order."""
    out: dict[str, list[str]] = {}
    for r in RESOURCE_TYPES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def types_in(group: str, version: str) -> list[ResourceType]:
    """Every type served in one group/version, in registry order."""
    return [r for r in RESOURCE_TYPES if r.group == group and r.version == version]


# The types kubelab itself touches, by name (their preferred versions).
NAMESPACES = _BY_PLURAL[("", "v1", "namespaces")]
PODS = _BY_PLURAL[("", "v1", "pods")]
SERVICES = _BY_PLURAL[("", "v1", "services")]
ENDPOINTS = _BY_PLURAL[("", "v1", "endpoints")]
CONFIGMAPS = _BY_PLURAL[("", "v1", "configmaps")]
SECRETS = _BY_PLURAL[("", "v1", "secrets")]
SERVICEACCOUNTS = _BY_PLURAL[("", "v1", "serviceaccounts")]
EVENTS = _BY_PLURAL[("", "v1", "events")]
DEPLOYMENTS = _BY_PLURAL[("apps", "v1", "deployments")]
REPLICASETS = _BY_PLURAL[("apps", "v1", "replicasets")]
JOBS = _BY_PLURAL[("batch", "v1", "jobs")]
ROLES = _BY_PLURAL[("rbac.authorization.k8s.io", "v1", "roles")]
ROLEBINDINGS = _BY_PLURAL[("rbac.authorization.k8s.io", "v1", "rolebindings")]
CLUSTERROLES = _BY_PLURAL[("rbac.authorization.k8s.io", "v1", "clusterroles")]
CLUSTERROLEBINDINGS = _BY_PLURAL[("rbac.authorization.k8s.io", "v1", "clusterrolebindings")]
VIRTUALSERVICES = _BY_PLURAL[("networking.istio.io", "v1", "virtualservices")]
DESTINATIONRULES = _BY_PLURAL[("networking.istio.io", "v1", "destinationrules")]
GATEWAYS = _BY_PLURAL[("networking.istio.io", "v1", "gateways")]
SERVICEENTRIES = _BY_PLURAL[("networking.istio.io", "v1", "serviceentries")]
CANARIES = _BY_PLURAL[("flagger.app", "v1beta1", "canaries")]
ROLLOUTS = _BY_PLURAL[("argoproj.io", "v1alpha1", "rollouts")]
