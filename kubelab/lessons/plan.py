"""A lesson's lifecycle as data: the steps of ``kubelab up`` and what each will do.

``STEPS`` is the order every run follows (preflight, cluster, components, images,
deploy, exercises; cleanup is ``kubelab down``). ``build_plan`` describes them for one
lesson and provider without touching anything, and ``render`` produces every object the
deploy step would apply, validated, optionally written to a folder for review.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubelab import paths
from kubelab.cluster import helm
from kubelab.components.catalog import install_order
from kubelab.errors import ValidationFailed
from kubelab.k8s.data import deep_merge
from kubelab.lessons.chart_values import LESSON_LABEL as LESSON_LABEL  # re-exported
from kubelab.lessons.chart_values import MANAGED_BY, kubelab_values
from kubelab.lessons.chart_values import PLACEHOLDER_REGISTRY as PLACEHOLDER_REGISTRY
from kubelab.lessons.loader import LoadedLesson
from kubelab.validation.manifests import object_name, validate_objects
from kubelab.validation.podsecurity import baseline_problems
from kubelab.yamlio import dump_yaml, load_all_yaml

if TYPE_CHECKING:
    from kubelab.cluster.facts import ClusterFacts
    from kubelab.components.values import InstallSettings

APP_CHART = "charts/app-backend"
STEPS = ("preflight", "cluster", "components", "images", "deploy", "exercises")
SANDBOX_COMPONENTS = (
    "none in the sandbox: Envoy plays Istio's routing; Kiali, Jaeger, VictoriaMetrics "
    "and Gitea are not part of it (exercises that need them are skipped)"
)


@dataclass
class Step:
    name: str
    description: str
    items: list[str] = field(default_factory=list)


@dataclass
class RenderedObject:
    source: str  # the release (or "namespaces") the object comes from
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", "?"))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", "?"))

    @property
    def namespace(self) -> str | None:
        ns = self.obj.get("metadata", {}).get("namespace")
        return str(ns) if ns else None

    def filename(self) -> str:
        folder = self.namespace or "_cluster"
        return f"{folder}/{self.kind.lower()}-{self.name}.yaml"


@dataclass
class Rendered:
    objects: list[RenderedObject]
    values: dict[str, dict[str, Any]]  # release -> values it is installed with


def lesson_labels(lesson_id: str) -> dict[str, str]:
    """Labels on everything kubelab creates for a lesson (``down`` deletes by them)."""
    return {**MANAGED_BY, LESSON_LABEL: lesson_id}


def release_values(
    loaded: LoadedLesson,
    index: int,
    registry: str = PLACEHOLDER_REGISTRY,
    pull_secrets: list[str] | None = None,
) -> dict[str, Any]:
    """The values of ``deploy[index]``: the lesson's, plus kubelab's labels and registry."""
    under, over = kubelab_values(loaded.lesson.id, registry, pull_secrets)
    return deep_merge(deep_merge(under, loaded.lesson.deploy[index].values), over)


def render_for_cluster(
    loaded: LoadedLesson, facts: ClusterFacts, settings: InstallSettings | None
) -> Rendered:
    """The lesson's objects as the deploy step applies them on a cluster with ``facts``:
    images named by the registry address, its pull Secret, the app's Gateway exposure
    (``settings``; None where no components are installed). ``up`` and ``up --dry-run``
    both render with this."""
    from kubelab.components.values import app_gateway_values
    from kubelab.images.pipeline import PULL_SECRET

    registry = facts.registry
    pull = [PULL_SECRET] if registry is not None and loaded.lesson.images else None
    exposure = app_gateway_values(settings) if settings is not None else {}
    host = registry.host if registry is not None else PLACEHOLDER_REGISTRY
    return render(loaded, host, pull, exposure)


def render(
    loaded: LoadedLesson,
    registry: str = PLACEHOLDER_REGISTRY,
    pull_secrets: list[str] | None = None,
    app_values: dict[str, Any] | None = None,
    *,
    namespaces: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> Rendered:
    """Every object the deploy step applies, validated; raises ``ValidationFailed``.

    ``namespaces`` moves the lesson's namespaces elsewhere (a class gives each student a
    copy of the app in their own); ``labels`` are added to kubelab's own labels."""
    lesson = loaded.lesson
    labels = {**lesson_labels(lesson.id), **(labels or {})}
    moved = namespaces or {}

    def where(namespace: str) -> str:
        return moved.get(namespace, namespace)

    objects: list[RenderedObject] = []
    for ns in lesson.namespaces:
        ns_labels = {**ns.labels, **labels}
        if ns.istio_injection:
            ns_labels["istio-injection"] = "enabled"
        objects.append(
            RenderedObject(
                "namespaces",
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": where(ns.name), "labels": ns_labels},
                },
            )
        )
    values: dict[str, dict[str, Any]] = {}
    for i, deploy in enumerate(lesson.deploy):
        values[deploy.release] = release_values(loaded, i, registry, pull_secrets)
        values[deploy.release]["commonLabels"] = {
            **values[deploy.release].get("commonLabels", {}),
            **labels,
        }
        if app_values and deploy.chart == APP_CHART:
            # Exposure chosen at `up` (--domain, --tls) wins over the lesson's defaults.
            values[deploy.release] = deep_merge(values[deploy.release], app_values)
        namespace = where(deploy.namespace)
        for obj in helm.template(
            paths.data_root() / deploy.chart, deploy.release, namespace, values[deploy.release]
        ):
            obj.setdefault("metadata", {}).setdefault("namespace", namespace)
            objects.append(RenderedObject(deploy.release, obj))
    for manifest in lesson.manifests:
        for doc in load_all_yaml((loaded.folder / manifest).read_text(encoding="utf-8")):
            meta = doc.setdefault("metadata", {})
            meta["labels"] = {**(meta.get("labels") or {}), **labels}
            if meta.get("namespace") in moved:
                meta["namespace"] = moved[meta["namespace"]]
            objects.append(RenderedObject(manifest, doc))
    problems = [str(p) for p in validate_objects((o.filename(), o.obj) for o in objects)]
    problems += [
        f"{o.filename()}: {object_name(o.obj)} {problem} (Pod Security baseline)"
        for o in objects
        for problem in baseline_problems(o.obj)
    ]
    if problems:
        raise ValidationFailed(
            f"lesson {lesson.id} renders {len(problems)} invalid field(s)",
            details=problems,
            hint="Fix the chart or the lesson's values; the lines name object and field. "
            "Pods must meet Pod Security baseline, which student namespaces enforce.",
        )
    return Rendered(objects, values)


def build_plan(
    loaded: LoadedLesson,
    provider: str,
    rendered: Rendered | None,
    *,
    charts: Path | None = None,
) -> list[Step]:
    """What each lifecycle step will do for ``loaded`` on ``provider`` (``charts``: the
    local chart folder the components are installed from, ``up --charts``)."""
    from kubelab.providers.requirements import PROVIDERS

    lesson = loaded.lesson
    info = PROVIDERS[provider]
    from kubelab.components.localcharts import INDEX_FILE, archive_name

    source = (
        f" from the chart archives in {charts} (checked against {INDEX_FILE})"
        if charts is not None
        else ""
    )
    steps = [
        Step(
            "preflight",
            f"check the tools and credentials the {provider} provider needs",
            [r.name for r in info.requirements],
        ),
        Step("cluster", info.cluster_step),
        Step(
            "components",
            f"install with Helm{source}, dependencies first, independent ones in parallel",
            [
                f"{c.name} ({c.namespace})"
                + (f" after {', '.join(c.depends_on)}" if c.depends_on else "")
                + (f": {', '.join(archive_name(r) for r in c.releases)}" if charts else "")
                for c in install_order(lesson.components)
            ],
        )
        if info.installs_components
        else Step("components", SANDBOX_COMPONENTS, []),
        Step(
            "images",
            "build the lesson's images and push them to the Gitea registry",
            [f"{img.name}:{v} from {img.context}/" for img in lesson.images for v in img.versions],
        )
        if info.installs_components
        else Step("images", "not built: the sandbox runs the app from its source", []),
        Step(
            "deploy",
            "apply the lesson's namespaces, Helm releases and manifests",
            [
                f"namespace {ns.name}"
                + (" (istio-injection=enabled)" if ns.istio_injection else "")
                for ns in lesson.namespaces
            ]
            + [f"helm release {d.release} of {d.chart} in {d.namespace}" for d in lesson.deploy]
            + [
                f"{o.kind}/{o.name}"
                for o in (rendered.objects if rendered else [])
                if o.source != "namespaces"
            ],
        ),
        Step(
            "exercises",
            f"{len(lesson.exercises)} exercises; run the checks of the first one",
            [e.id for e in lesson.exercises],
        ),
    ]
    assert [s.name for s in steps] == list(STEPS)
    return steps


def write_rendered(
    rendered: Rendered,
    out: Path,
    plan: list[Step],
    lesson_id: str,
    components: list[dict[str, Any]] | None = None,
    component_objects: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Write objects (one file each), values files (secrets masked) and the plan;
    ``component_objects`` (:func:`kubelab.components.deploy.component_objects`) go to
    ``manifests/_components/``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for sub in ("manifests", "values"):
        # Only kubelab's own sub-folders are replaced; anything else in ``out`` stays.
        shutil.rmtree(out / sub, ignore_errors=True)
    for obj in rendered.objects:
        path = out / "manifests" / obj.filename()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(obj.obj), encoding="utf-8")
        written.append(path)
    for entry in component_objects or []:
        extra = RenderedObject(entry["component"], entry["object"])
        path = out / "manifests" / "_components" / extra.filename()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(extra.obj), encoding="utf-8")
        written.append(path)
    for release, values in rendered.values.items():
        path = out / "values" / f"{release}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(values), encoding="utf-8")
        written.append(path)
    for component in components or []:
        path = out / "values" / "components" / f"{component['release']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(component["values"]), encoding="utf-8")
        written.append(path)
    plan_path = out / "plan.json"
    plan_path.write_text(
        json.dumps(
            {
                "lesson": lesson_id,
                "steps": [asdict(s) for s in plan],
                "components": [
                    {k: v for k, v in c.items() if k != "values"} for c in components or []
                ],
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    written.append(plan_path)
    return written
