"""Every check type a lesson can declare, with its parameters.

A lesson file names a check by ``type:`` and gives its parameters; the class registered
under that name validates them when the lesson is loaded, so a typo or a split that does
not sum to 100 is reported with its file and line long before a student runs
``kubelab check``. ``CHECK_TYPES`` is the registry: type name -> class; a check's
``type:`` is the tag of its msgspec struct (``CheckSpec.type``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar, cast

import msgspec
from msgspec import Meta

from kubelab import base
from kubelab.base import LocalizedText, StrictModel
from kubelab.k8s import selectors

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
Name = Annotated[str, Meta(pattern=DNS_SUBDOMAIN, max_length=253)]
Namespace = Annotated[str, Meta(pattern=DNS_LABEL, max_length=63)]
Slug = Annotated[str, Meta(pattern=DNS_LABEL, max_length=63)]
base.PATTERN_NAMES.update(
    {
        DNS_LABEL: "must be a lowercase name: letters, digits and '-', starting and ending "
        "with a letter or digit",
        DNS_SUBDOMAIN: "must be a lowercase Kubernetes name: letters, digits, '-' and '.'",
    }
)


class CheckSpec(StrictModel, tag_field="type", frozen=True, kw_only=True):
    """Fields common to every check; the ``type:`` key of the file is the struct's tag."""

    # The components this type of check needs besides the cluster itself (the sandbox
    # has none of them, so exercises using such checks are skipped there).
    needs: ClassVar[frozenset[str]] = frozenset()

    id: Slug | None = None  # stable id; defaults to the type
    description: LocalizedText | None = None
    required: bool = True
    # The check's share of its exercise's points (partial credit; see docs/grading.md).
    # An optional check earns nothing: it is never counted for or against the student.
    points: Annotated[float, Meta(gt=0, le=1000)] = 1
    # When set, the check must pass on every sample for this long (a split that must *stay*
    # 50/50), sampled every ``hold_interval`` seconds; see kubelab.checks.runner.
    hold_seconds: Annotated[float, Meta(gt=0, le=300)] | None = None
    hold_interval: Annotated[float, Meta(ge=0.5, le=120)] = 5.0

    @property
    def type(self) -> str:
        return cast(str, self.__struct_config__.tag)

    def retarget(self, home: str, mine: str) -> Self:
        """This check aimed at namespace ``mine`` wherever it is aimed at the lesson's
        namespace ``home`` (a student of a class works in their own namespace). Checks
        that name no namespace are returned as they are."""
        return self


class _InNamespace(CheckSpec, frozen=True, kw_only=True):
    """A check on objects of one namespace (its ``namespace`` field)."""

    namespace: Namespace | None = None

    def retarget(self, home: str, mine: str) -> Self:
        if self.namespace == home:
            return msgspec.structs.replace(self, namespace=mine)
        return self


CHECK_TYPES: dict[str, type[CheckSpec]] = {}


def type_name(cls: type[CheckSpec]) -> str:
    """The ``type:`` a lesson file gives for checks of ``cls``."""
    return cast(str, cls.__struct_config__.tag)


def register(cls: type[CheckSpec]) -> type[CheckSpec]:
    """Class decorator adding a check type to the registry under its tag."""
    name = type_name(cls)
    if name in CHECK_TYPES:
        raise RuntimeError(f"check type {name!r} registered twice")
    CHECK_TYPES[name] = cls
    return cls


def _validate_split(value: dict[str, int]) -> None:
    if not value:
        raise ValueError("at least one subset is needed")
    bad = [k for k in value if not re.match(DNS_LABEL, k)]
    if bad:
        raise ValueError(f"subset name {bad[0]!r} is not a valid name")
    out_of_range = {k: w for k, w in value.items() if not 0 <= w <= 100}
    if out_of_range:
        k, w = next(iter(out_of_range.items()))
        raise ValueError(f"weight of {k} is {w}; weights are between 0 and 100")
    total = sum(value.values())
    if total != 100:
        parts = " + ".join(f"{k} {w}" for k, w in value.items())
        raise ValueError(f"weights must sum to 100 (got {parts} = {total})")


_C = TypeVar("_C", bound=CheckSpec)


def _namespace_object_moved(check: Any, moved: _C, home: str, mine: str) -> _C:
    """``moved`` (``check`` retargeted) also renamed when ``check`` names the lesson's
    Namespace object itself."""
    if check.kind == "Namespace" and check.name == home:
        return msgspec.structs.replace(moved, name=mine)
    return moved


class _Object(_InNamespace, frozen=True, kw_only=True):
    api_version: Annotated[str, Meta(pattern=r"^([a-z0-9.-]+/)?v[0-9]+((alpha|beta)[0-9]+)?$")]
    kind: Annotated[str, Meta(pattern=r"^[A-Z][A-Za-z0-9]*$")]
    name: Name
    namespace: Namespace | None = None

    def retarget(self, home: str, mine: str) -> Self:
        return _namespace_object_moved(self, super().retarget(home, mine), home, mine)


@register
class ResourceExists(_Object, tag="resource-exists", frozen=True, kw_only=True):
    """An object exists (``kubectl get KIND NAME``)."""


@register
class FieldEquals(_Object, tag="field-equals", frozen=True, kw_only=True):
    """A field of an object, addressed by a kubectl-style JSONPath, equals a value."""

    jsonpath: Annotated[str, Meta(pattern=r"^\{?\.[^\s]*\}?$")]
    equals: Any


class _Selected(_InNamespace, frozen=True, kw_only=True):
    namespace: Namespace
    selector: Annotated[str, Meta(min_length=1)]

    field_rules: ClassVar[dict[str, Callable[[Any], object]]] = {"selector": selectors.parse}


@register
class PodsReady(_Selected, tag="pods-ready", frozen=True, kw_only=True):
    """At least ``min_ready`` pods matching the selector are Ready."""

    min_ready: Annotated[int, Meta(ge=1)] = 1


@register
class SidecarInjected(_Selected, tag="sidecar-injected", frozen=True, kw_only=True):
    """Every pod matching the selector runs the mesh's sidecar container."""

    container: str = "istio-proxy"


@register
class VirtualServiceWeights(_InNamespace, tag="virtualservice-weights", frozen=True, kw_only=True):
    """The VirtualService routes ``expect`` percent of its traffic to each subset.

    Compared per subset: the order of routes and destinations does not matter, a subset
    that is missing counts as 0, and the DestinationRule must define the subsets used.
    """

    name: Name
    namespace: Namespace
    destination_rule: Name | None = None  # defaults to `name`
    expect: dict[str, int]

    field_rules: ClassVar[dict[str, Callable[[Any], object]]] = {"expect": _validate_split}


class _Traffic(_InNamespace, frozen=True, kw_only=True):
    service: Name
    namespace: Namespace
    port: Annotated[int, Meta(ge=1, le=65535)] = 80
    path: Annotated[str, Meta(pattern=r"^/")] = "/"
    via: Literal["in-mesh", "gateway"] = "in-mesh"
    tester: Name = "curl-test"  # in-mesh pod that sends requests
    timeout_seconds: Annotated[float, Meta(gt=0, le=30)] = 2.0


@register
class TrafficSplit(_Traffic, tag="traffic-split", frozen=True, kw_only=True):
    """Sampled answers are split between versions as expected (binomial tolerance)."""

    samples: Annotated[int, Meta(ge=20, le=5000)] | None = None  # auto when empty
    expect: dict[str, int]
    # app_backend answers /version without touching its database pool, so sampling a split
    # never spends v1's budget of requests: the student's own requests to / make it hang.
    path: Annotated[str, Meta(pattern=r"^/")] = "/version"

    field_rules: ClassVar[dict[str, Callable[[Any], object]]] = {"expect": _validate_split}


@register
class HttpStable(_Traffic, tag="http-stable", frozen=True, kw_only=True):
    """``requests`` requests in a row are all answered in time (and by one version)."""

    requests: Annotated[int, Meta(ge=1, le=5000)] = 300
    expect_version: Slug | None = None


@register
class MetricsQuery(CheckSpec, tag="metrics-query", frozen=True, kw_only=True):
    """A PromQL query against VictoriaMetrics compares to a threshold.

    An empty result (no series yet) is ``pending`` by default, never a pass: a query over
    a metric that does not exist must not grade as success.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"victoria-metrics"})
    query: Annotated[str, Meta(min_length=1)]
    compare: Literal[">", ">=", "<", "<=", "=="] = ">="
    value: float
    on_empty: Literal["pending", "failed"] = "pending"

    def retarget(self, home: str, mine: str) -> Self:
        # PromQL label values: namespace="<lesson ns>" (either quote)
        quoted = re.compile(rf"(['\"]){re.escape(home)}\1")
        query = quoted.sub(lambda m: m.group(1) + mine + m.group(1), self.query)
        return msgspec.structs.replace(self, query=query) if query != self.query else self


@register
class JaegerTraces(CheckSpec, tag="jaeger-traces", frozen=True, kw_only=True):
    """Jaeger holds at least ``min_traces`` traces of ``service`` in the last minutes."""

    needs: ClassVar[frozenset[str]] = frozenset({"jaeger"})
    service: Annotated[str, Meta(min_length=1)]
    min_traces: Annotated[int, Meta(ge=1)] = 1
    lookback_minutes: Annotated[int, Meta(ge=1, le=1440)] = 15

    def retarget(self, home: str, mine: str) -> Self:
        # Jaeger names a mesh service <workload>.<namespace>
        if self.service.endswith(f".{home}"):
            return msgspec.structs.replace(self, service=self.service[: -len(home)] + mine)
        return self


# -- progressive delivery (Flagger, Argo Rollouts) ------------------------------------------

FlaggerPhase = Literal[
    "Initializing",
    "Initialized",
    "Waiting",
    "Progressing",
    "WaitingPromotion",
    "Promoting",
    "Finalising",
    "Succeeded",
    "Failed",
    "Terminating",
    "Terminated",
]
RolloutPhase = Literal["Healthy", "Progressing", "Paused", "Degraded"]
AnalysisPhase = Literal["Successful", "Failed", "Error", "Inconclusive"]
ImageTag = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]


@register
class FlaggerCanary(_InNamespace, tag="flagger-canary", frozen=True, kw_only=True):
    """A Flagger Canary is in one of ``phase`` and, optionally, got there the right way.

    ``primary_tag`` checks the image tag the primary Deployment runs (what was promoted:
    ``<spec.targetRef.name>-primary``, i.e. ``<name>-primary`` when the Canary is named after
    its Deployment); ``reached_weight`` that Flagger's events show the canary weight advancing
    to at least that percentage; ``events`` substrings (case-insensitive) that Flagger's events
    must contain (e.g. "Rolling back"). While the Canary is still moving towards a wanted final
    phase (Succeeded/Failed) the result is ``pending``, with the current weight in the message;
    so is a final phase left from the previous revision while Flagger has not picked up a
    changed Deployment yet.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"flagger"})
    name: Name
    namespace: Namespace
    phase: Annotated[list[FlaggerPhase], Meta(min_length=1)]
    primary_tag: ImageTag | None = None
    reached_weight: Annotated[int, Meta(ge=1, le=100)] | None = None
    events: list[str] = msgspec.field(default_factory=list)


@register
class RolloutStatus(_InNamespace, tag="rollout-status", frozen=True, kw_only=True):
    """An Argo Rollout's phase, and optionally its step, pause, canary weight and image.

    ``step`` is ``status.currentStepIndex`` (0-based, as the dashboard shows it); ``paused``
    whether the rollout waits for a promotion; ``canary_weight`` the weight Argo Rollouts set
    for the canary; ``stable_tag`` the image tag of the stable ReplicaSet.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"argo-rollouts"})
    name: Name
    namespace: Namespace
    phase: Annotated[list[RolloutPhase], Meta(min_length=1)]
    step: Annotated[int, Meta(ge=0)] | None = None
    paused: bool | None = None
    canary_weight: Annotated[int, Meta(ge=0, le=100)] | None = None
    stable_tag: ImageTag | None = None


@register
class RolloutServices(_InNamespace, tag="rollout-services", frozen=True, kw_only=True):
    """Which ReplicaSet (by the image tag of its pods) the Rollout's Services select.

    Argo Rollouts points a Service at a ReplicaSet by adding the label
    ``rollouts-pod-template-hash`` to its selector; this check follows that label to the
    ReplicaSet and compares its image tag, e.g. active -> v1 and preview -> v2 during a
    blue/green before promotion.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"argo-rollouts"})
    rollout: Name
    namespace: Namespace
    # Service name -> image tag of the ReplicaSet it must select
    expect: Annotated[dict[Name, ImageTag], Meta(min_length=1)]


@register
class AnalysisRunResult(_InNamespace, tag="analysisrun-result", frozen=True, kw_only=True):
    """The latest AnalysisRun of a Rollout (optionally from one template) ended as expected.

    A run still going is ``pending``; the message lists each metric's phase and the
    measurement's value or error (an empty query result shows up here). With ``template``,
    the runs are those the Rollout starts where it references that template, and only the
    template's metrics count (an analysis listing two templates runs both in one AnalysisRun).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"argo-rollouts"})
    rollout: Name
    namespace: Namespace
    # AnalysisTemplate the run used (found through where the Rollout references it)
    template: Name | None = None
    expect: AnalysisPhase = "Successful"


# -- declarative assertions on objects (assert, absent) -------------------------------------


def _selector_rule(value: str | None) -> None:
    if value is not None:
        selectors.parse(value)


class _Addressed(_InNamespace, frozen=True, kw_only=True):
    """Objects of one kind, addressed by ``name`` or by a label ``selector`` (one of them).

    ``object`` is an assertion tree (docs/assert-checks.md, :mod:`kubelab.k8s.assertion`);
    the lesson loader checks its expressions, so that a problem points at the key's line.
    """

    api_version: Annotated[str, Meta(pattern=r"^([a-z0-9.-]+/)?v[0-9]+((alpha|beta)[0-9]+)?$")]
    kind: Annotated[str, Meta(pattern=r"^[A-Z][A-Za-z0-9]*$")]
    name: Name | None = None
    selector: Annotated[str, Meta(min_length=1)] | None = None
    namespace: Namespace | None = None

    field_rules: ClassVar[dict[str, Callable[[Any], object]]] = {"selector": _selector_rule}

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.name is None) == (self.selector is None):
            raise ValueError("give the object's name or a label selector (one of them)")

    def retarget(self, home: str, mine: str) -> Self:
        return _namespace_object_moved(self, super().retarget(home, mine), home, mine)


@register
class Assert(_Addressed, tag="assert", frozen=True, kw_only=True):
    """An object matches a partial object (Chainsaw's ``assert``).

    With ``name``, that object must exist and match ``object``; with ``selector``, at least
    one selected object (``match: any``, the default) or every one (``match: all``) must
    match, and an empty selection fails.
    """

    object: dict[str, Any]
    match: Literal["any", "all"] | None = None  # selector only; any when not given

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.match is not None and self.selector is None:
            raise ValueError("match is for a selector: a named object matches or not")


@register
class Absent(_Addressed, tag="absent", frozen=True, kw_only=True):
    """No object matches ``object`` (Chainsaw's ``error``); without ``object``, the named
    object does not exist or the selector selects nothing."""

    object: dict[str, Any] | None = None
