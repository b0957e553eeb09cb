"""Every check type a lesson can declare, with its parameters.

A lesson file names a check by ``type:`` and gives its parameters; the class registered
under that name validates them when the lesson is loaded, so a typo or a split that does
not sum to 100 is reported with its file and line long before a student runs
``kubelab check``. ``CHECK_TYPES`` is the registry: type name -> class.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, field_validator

from kubelab.base import LocalizedText, StrictModel
from kubelab.checks import selectors

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
Name = Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
Namespace = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
Slug = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]


class CheckSpec(StrictModel):
    """Fields common to every check."""

    # The components this type of check needs besides the cluster itself (the sandbox
    # has none of them, so exercises using such checks are skipped there).
    needs: ClassVar[frozenset[str]] = frozenset()

    type: str
    id: Slug | None = Field(default=None, description="stable id; defaults to the type")
    description: LocalizedText | None = None
    required: bool = True

    def retarget(self, home: str, mine: str) -> Self:
        """This check aimed at namespace ``mine`` wherever it is aimed at the lesson's
        namespace ``home`` (a student of a class works in their own namespace). Checks
        that name no namespace are returned as they are."""
        return self


class _InNamespace(CheckSpec):
    """A check on objects of one namespace (its ``namespace`` field)."""

    namespace: Namespace | None = None

    def retarget(self, home: str, mine: str) -> Self:
        if self.namespace == home:
            return self.model_copy(update={"namespace": mine})
        return self


CHECK_TYPES: dict[str, type[CheckSpec]] = {}


def register(cls: type[CheckSpec]) -> type[CheckSpec]:
    """Class decorator adding a check type to the registry under its ``type`` literal."""
    (name,) = cls.model_fields["type"].annotation.__args__  # type: ignore[union-attr]
    if name in CHECK_TYPES:
        raise RuntimeError(f"check type {name!r} registered twice")
    CHECK_TYPES[name] = cls
    return cls


def _validate_selector(value: str) -> str:
    selectors.parse(value)
    return value


def _validate_split(value: dict[str, int]) -> dict[str, int]:
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
    return value


class _Object(_InNamespace):
    api_version: str = Field(pattern=r"^([a-z0-9.-]+/)?v[0-9]+((alpha|beta)[0-9]+)?$")
    kind: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$")
    name: Name
    namespace: Namespace | None = None

    def retarget(self, home: str, mine: str) -> Self:
        moved = super().retarget(home, mine)
        if self.kind == "Namespace" and self.name == home:
            return moved.model_copy(update={"name": mine})  # the namespace object itself
        return moved


@register
class ResourceExists(_Object):
    """An object exists (``kubectl get KIND NAME``)."""

    type: Literal["resource-exists"]


@register
class FieldEquals(_Object):
    """A field of an object, addressed by a kubectl-style JSONPath, equals a value."""

    type: Literal["field-equals"]
    jsonpath: str = Field(pattern=r"^\{?\.[^\s]*\}?$", examples=["{.metadata.labels.app}"])
    equals: Any


class _Selected(_InNamespace):
    namespace: Namespace
    selector: str = Field(min_length=1, examples=["app=app-backend,version=v1"])

    _selector = field_validator("selector")(_validate_selector)


@register
class PodsReady(_Selected):
    """At least ``min_ready`` pods matching the selector are Ready."""

    type: Literal["pods-ready"]
    min_ready: int = Field(default=1, ge=1)


@register
class SidecarInjected(_Selected):
    """Every pod matching the selector runs the mesh's sidecar container."""

    type: Literal["sidecar-injected"]
    container: str = "istio-proxy"


@register
class VirtualServiceWeights(_InNamespace):
    """The VirtualService routes ``expect`` percent of its traffic to each subset.

    Compared per subset: the order of routes and destinations does not matter, a subset
    that is missing counts as 0, and the DestinationRule must define the subsets used.
    """

    type: Literal["virtualservice-weights"]
    name: Name
    namespace: Namespace
    destination_rule: Name | None = Field(default=None, description="defaults to `name`")
    expect: dict[str, int]

    _expect = field_validator("expect")(_validate_split)


class _Traffic(_InNamespace):
    service: Name
    namespace: Namespace
    port: int = Field(default=80, ge=1, le=65535)
    path: str = Field(default="/", pattern=r"^/")
    via: Literal["in-mesh", "gateway"] = "in-mesh"
    tester: Name = Field(default="curl-test", description="in-mesh pod that sends requests")
    timeout_seconds: float = Field(default=2.0, gt=0, le=30)


@register
class TrafficSplit(_Traffic):
    """Sampled answers are split between versions as expected (binomial tolerance)."""

    type: Literal["traffic-split"]
    samples: int | None = Field(default=None, ge=20, le=5000, description="auto when empty")
    expect: dict[str, int]
    # app_backend answers /version without touching its database pool, so sampling a split
    # never spends v1's budget of requests: the student's own requests to / make it hang.
    path: str = Field(default="/version", pattern=r"^/")

    _expect = field_validator("expect")(_validate_split)


@register
class HttpStable(_Traffic):
    """``requests`` requests in a row are all answered in time (and by one version)."""

    type: Literal["http-stable"]
    requests: int = Field(default=300, ge=1, le=5000)
    expect_version: Slug | None = None


@register
class MetricsQuery(CheckSpec):
    """A PromQL query against VictoriaMetrics compares to a threshold.

    An empty result (no series yet) is ``pending`` by default, never a pass: a query over
    a metric that does not exist must not grade as success.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"victoria-metrics"})
    type: Literal["metrics-query"]
    query: str = Field(min_length=1)
    compare: Literal[">", ">=", "<", "<=", "=="] = ">="
    value: float
    on_empty: Literal["pending", "failed"] = "pending"

    def retarget(self, home: str, mine: str) -> Self:
        # PromQL label values: namespace="<lesson ns>" (either quote)
        quoted = re.compile(rf"(['\"]){re.escape(home)}\1")
        query = quoted.sub(lambda m: m.group(1) + mine + m.group(1), self.query)
        return self.model_copy(update={"query": query}) if query != self.query else self


@register
class JaegerTraces(CheckSpec):
    """Jaeger holds at least ``min_traces`` traces of ``service`` in the last minutes."""

    needs: ClassVar[frozenset[str]] = frozenset({"jaeger"})
    type: Literal["jaeger-traces"]
    service: str = Field(min_length=1, examples=["app-backend.istio"])
    min_traces: int = Field(default=1, ge=1)
    lookback_minutes: int = Field(default=15, ge=1, le=1440)

    def retarget(self, home: str, mine: str) -> Self:
        # Jaeger names a mesh service <workload>.<namespace>
        if self.service.endswith(f".{home}"):
            return self.model_copy(update={"service": self.service[: -len(home)] + mine})
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
ImageTag = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]


@register
class FlaggerCanary(_InNamespace):
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
    type: Literal["flagger-canary"]
    name: Name
    namespace: Namespace
    phase: list[FlaggerPhase] = Field(min_length=1, examples=[["Succeeded"]])
    primary_tag: ImageTag | None = None
    reached_weight: int | None = Field(default=None, ge=1, le=100)
    events: list[str] = Field(default_factory=list)


@register
class RolloutStatus(_InNamespace):
    """An Argo Rollout's phase, and optionally its step, pause, canary weight and image.

    ``step`` is ``status.currentStepIndex`` (0-based, as the dashboard shows it); ``paused``
    whether the rollout waits for a promotion; ``canary_weight`` the weight Argo Rollouts set
    for the canary; ``stable_tag`` the image tag of the stable ReplicaSet.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"argo-rollouts"})
    type: Literal["rollout-status"]
    name: Name
    namespace: Namespace
    phase: list[RolloutPhase] = Field(min_length=1, examples=[["Healthy"]])
    step: int | None = Field(default=None, ge=0)
    paused: bool | None = None
    canary_weight: int | None = Field(default=None, ge=0, le=100)
    stable_tag: ImageTag | None = None


@register
class RolloutServices(_InNamespace):
    """Which ReplicaSet (by the image tag of its pods) the Rollout's Services select.

    Argo Rollouts points a Service at a ReplicaSet by adding the label
    ``rollouts-pod-template-hash`` to its selector; this check follows that label to the
    ReplicaSet and compares its image tag, e.g. active -> v1 and preview -> v2 during a
    blue/green before promotion.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"argo-rollouts"})
    type: Literal["rollout-services"]
    rollout: Name
    namespace: Namespace
    expect: dict[Name, ImageTag] = Field(
        min_length=1, description="Service name -> image tag of the ReplicaSet it must select"
    )


@register
class AnalysisRunResult(_InNamespace):
    """The latest AnalysisRun of a Rollout (optionally from one template) ended as expected.

    A run still going is ``pending``; the message lists each metric's phase and the
    measurement's value or error (an empty query result shows up here). With ``template``,
    the runs are those the Rollout starts where it references that template, and only the
    template's metrics count (an analysis listing two templates runs both in one AnalysisRun).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"argo-rollouts"})
    type: Literal["analysisrun-result"]
    rollout: Name
    namespace: Namespace
    template: Name | None = Field(
        default=None,
        description="AnalysisTemplate the run used (found through where the Rollout references it)",
    )
    expect: AnalysisPhase = "Successful"
