"""Running a lesson's lifecycle: ``up`` walks the steps in ``plan.STEPS``, ``down`` undoes.

Each step is a method named after it; state is written after every step (and every
object applied), so a re-run after a crash or Ctrl-C resumes, and ``down`` knows what to
remove. Progress goes to a ``Reporter`` (the CLI prints it; tests collect it).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubelab.checks.registry import CheckContext
from kubelab.checks.runner import ExerciseOutcome, wait_for_exercise
from kubelab.cluster.drift import Drift
from kubelab.cluster.facts import platform_of
from kubelab.cluster.helm import HelmClient
from kubelab.cluster.kube import CLASS_LABEL, Kube
from kubelab.components.deploy import component_nodes, components_for, removal_nodes
from kubelab.components.installer import NodeResult, ProgressSink, run_dag
from kubelab.components.values import InstallSettings, extra_manifests
from kubelab.errors import KubelabError
from kubelab.k8s.workloads import apply_order
from kubelab.lessons.loader import LoadedLesson, find_lesson
from kubelab.lessons.model import Exercise, Lesson
from kubelab.lessons.plan import LESSON_LABEL, STEPS, render_for_cluster
from kubelab.lessons.progress import record_progress
from kubelab.providers.base import ClusterFacts, Provider
from kubelab.retry import RetryPolicy
from kubelab.state import CreatedResource, LessonRecord, StateStore

Reporter = Callable[[str, str], None]  # (step, message)

READY_TIMEOUT = 120.0


def _quiet(step: str, message: str) -> None:
    pass


def lesson_namespace(lesson: Lesson) -> str:
    """The namespace students work in: the first the lesson declares (or deploys to)."""
    if lesson.namespaces:
        return lesson.namespaces[0].name
    if lesson.deploy:
        return lesson.deploy[0].namespace
    return "default"


def _merge_details(values: dict[str, Any], record: LessonRecord) -> None:
    record.details.update(values)


def running_records(state: Any) -> list[LessonRecord]:
    return [r for r in state.lessons.values() if "deploy" in r.steps_done]


def find_lesson_components(lesson_id: str) -> list[str]:
    try:
        return list(find_lesson(lesson_id).lesson.components)
    except KubelabError:  # a lesson removed from disk still holds its components
        return []


# About 6 s of retries (0.2 + 0.4 + 0.8 + 1.6 + 3.2) before a check says "cannot reach".
CHECK_RETRY = RetryPolicy(deadline=8.0, max_attempts=6)


def check_context(provider: Provider, record: LessonRecord) -> CheckContext:
    """How checks reach the lesson's cluster, from what ``up`` recorded."""
    from kubelab.components.catalog import CATALOG

    # A check answers within seconds even when the API is dead or refuses connections:
    # short retries, and once unreachable, the run's other checks say so at once.
    kube = Kube(
        Path(record.details["kubeconfig"]),
        timeout=5.0,
        retry=CHECK_RETRY,
        give_up_once_unreachable=True,
    )
    details = dict(record.details)
    available = provider.available_components(find_lesson_components(record.lesson))
    # Metrics and trace checks query these APIs through the API server's service proxy.
    services = {
        name: component.api
        for name, component in CATALOG.items()
        if component.api is not None and name in available
    }
    return CheckContext(
        kube=kube, sampler=lambda spec: provider.sampler(kube, details, spec), services=services
    )


def exercise_available(exercise: Exercise, available: set[str]) -> bool:
    return exercise.needed_components() <= available


@dataclass
class UpResult:
    """What one ``up`` did; ``kubelab up -o json`` prints the last four as ``changes``.

    A second ``up`` of a lesson that is fully up changes nothing, and says so here: every
    ``components`` outcome is ``unchanged``, ``images`` only says that each tag already
    exists, ``deploy_changed`` and ``api_writes`` are 0.
    """

    record: LessonRecord
    first: ExerciseOutcome | None
    seconds: float
    # DAG node (Helm release, ``gitea:admin-secret``, ``<component>:manifests``) -> what
    # happened to it: installed, upgraded, unchanged, created, applied. Empty when the
    # provider installs no components (the sandbox).
    components: dict[str, str] = field(default_factory=dict)
    # The images step's lines: Gitea changes, tags skipped because they exist, builds.
    images: list[str] = field(default_factory=list)
    deployed: int = 0  # objects of the lesson the deploy step applied (or found up to date)
    deploy_changed: int = 0  # mutating API calls the deploy step sent
    # Every mutating Kubernetes API call ``up`` sent through kubelab's client (Kube.mutations:
    # Secrets, component manifests, pull Secrets, kaniko Jobs, the lesson's objects). Helm's
    # own calls are not in it: their result is the ``components`` outcome.
    api_writes: int = 0
    # "<Kind> <namespace>/<name>" -> its fields changed since kubelab deployed it
    drift: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def changes(self) -> dict[str, Any]:
        """The ``changes`` object of ``kubelab up -o json``."""
        return {
            "components": [{"name": n, "outcome": o} for n, o in self.components.items()],
            "images": list(self.images),
            "deploy": {
                "objects": self.deployed,
                "changed": self.deploy_changed,
                "drift": self.drift,
            },
            "api_writes": self.api_writes,
        }


def merge_outcomes(*passes: list[NodeResult]) -> dict[str, str]:
    """One outcome per DAG node over several passes of the installer (the components step
    runs it again when the gateway's IP gives the dashboards their names): a node keeps the
    last outcome that changed something, ``unchanged`` only when no pass changed it."""
    merged: dict[str, str] = {}
    for results in passes:
        for result in results:
            if result.name not in merged or result.outcome != "unchanged":
                merged[result.name] = result.outcome
    return merged


class LessonRunner:
    def __init__(
        self,
        loaded: LoadedLesson,
        provider: Provider,
        store: StateStore,
        report: Reporter = _quiet,
        ready_timeout: float = READY_TIMEOUT,
        poll: float = 0.2,
        progress: ProgressSink | None = None,
        options: dict[str, Any] | None = None,
        record_progress: bool = True,
    ) -> None:
        # The lesson as done on this provider (its offline paths in the sandbox).
        loaded = loaded.on(provider)
        self.loaded = loaded
        # False for `kubelab test`: its checks are no student's progress.
        self.record_progress = record_progress
        self.lesson = loaded.lesson
        self.provider = provider
        self.store = store
        self.report = report
        self.ready_timeout = ready_timeout
        self.poll = poll
        self.namespace = lesson_namespace(self.lesson)
        self.progress = progress
        # --domain, --tls, --email: how the lesson's components are exposed; --charts: a
        # folder of pinned chart archives to install from instead of the repositories.
        self.options = options or {}
        self._kube: Kube | None = None
        # Objects changed since kubelab deployed them (the deploy step fills it).
        self.drift: dict[str, list[Drift]] = {}

    # -- bookkeeping -----------------------------------------------------------------------

    def _update(self, change: Callable[[LessonRecord], None]) -> LessonRecord:
        with self.store.transaction() as state:
            record = state.lesson(self.lesson.id)
            record.provider = self.provider.name
            change(record)
            from kubelab.state import now

            record.updated_at = now()
            return record

    def _done(self, step: str) -> None:
        self._update(lambda r: r.steps_done.append(step) if step not in r.steps_done else None)

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            record = self.store.load().lesson(self.lesson.id)
            self._kube = Kube(Path(record.details["kubeconfig"]))
        return self._kube

    # -- up --------------------------------------------------------------------------------

    def up(self) -> UpResult:
        """Every step, resuming where a previous run stopped; one up or down at a time
        per home (``kubelab.homelock``)."""
        from kubelab import homelock

        with homelock.exclusive(self.store.path.parent, "up"):
            return self._up()

    def _up(self) -> UpResult:
        started = time.monotonic()
        returned: dict[str, Any] = {}
        for step in STEPS:
            returned[step] = getattr(self, f"step_{step}")()
            self._done(step)
        record = self.store.load().lesson(self.lesson.id)
        deployed, deploy_changed = returned.get("deploy") or (0, 0)
        return UpResult(
            record,
            returned.get("exercises"),
            time.monotonic() - started,
            components=returned.get("components") or {},
            images=returned.get("images") or [],
            deployed=deployed,
            deploy_changed=deploy_changed,
            drift={where: [d.to_json() for d in drift] for where, drift in self.drift.items()},
            # One client from the cluster step on; the checks use their own (read-only).
            api_writes=self.kube.mutations,
        )

    def step_preflight(self) -> None:
        self.provider.preflight()
        self.report("preflight", f"tools for the {self.provider.name} provider are here")

    def step_cluster(self) -> None:
        info = self.provider.ensure_cluster(self.namespace)
        facts = self.provider.facts()
        if facts.mesh_platform is None:
            # A cluster kubelab did not make: its version says where the nodes keep their
            # CNI plugins (k3s, GKE), which Istio's CNI node agent must know.
            version = Kube(info.kubeconfig).version()
            facts = dataclasses.replace(facts, mesh_platform=platform_of(version))

        def record(r: LessonRecord) -> None:
            r.cluster = self.provider.name
            recorded = r.details.get("cluster_facts")
            kept = facts
            if recorded and recorded.get("registry"):
                # The registry address is decided once per cluster: images already pushed
                # and pull Secrets already made name it, so a later up keeps it.
                registry = ClusterFacts.from_state(recorded).registry
                kept = dataclasses.replace(facts, registry=registry)
            r.details.update(info.details)
            r.details["cluster_facts"] = kept.to_state()
            r.details["registry"] = kept.registry.host if kept.registry else None
            r.details["kubeconfig"] = str(info.kubeconfig)
            r.details["namespace"] = self.namespace

        self._update(record)
        self._kube = None
        where = info.details.get("api", info.kubeconfig)
        self.report("cluster", f"{self.provider.name} cluster ready at {where}")

    def facts(self) -> ClusterFacts:
        """The cluster's facts as ``up`` recorded them (the provider's, before a first up)."""
        recorded = self.store.load().lesson(self.lesson.id).details.get("cluster_facts")
        return ClusterFacts.from_state(recorded) if recorded else self.provider.facts()

    def settings(self) -> InstallSettings:
        """How components are configured on this cluster (provider facts + CLI choices)."""
        details = self.store.load().lesson(self.lesson.id).details
        return InstallSettings.for_cluster(
            self.facts(),
            domain=self.options.get("domain") or details.get("domain"),
            tls=bool(self.options.get("tls")),
            email=self.options.get("email"),
            expose_dashboards=bool(self.options.get("expose_dashboards")),
        )

    def helm(self) -> HelmClient:
        import logging

        from kubelab.tools import require_tool

        # pyhelm3 warns about the `helm status` that fails before a first install.
        logging.getLogger("pyhelm3").setLevel(logging.ERROR)

        record = self.store.load().lesson(self.lesson.id)
        return HelmClient(Path(record.details["kubeconfig"]), require_tool("helm"))

    def chart_dir(self) -> Path | None:
        """The local chart folder the components come from (``--charts``), if any.

        A folder given now is recorded in the lesson's state, so a re-run without the
        flag (after Ctrl-C, or to resume) installs from the same place."""
        chosen = self.options.get("charts")
        if chosen:
            folder = str(Path(chosen).expanduser().resolve())
            self._update(functools.partial(_merge_details, {"charts": folder}))
        recorded = self.store.load().lesson(self.lesson.id).details.get("charts")
        return Path(recorded) if recorded else None

    def step_components(self) -> dict[str, str]:
        """Install the lesson's components; returns each DAG node's outcome."""
        if not self.provider.installs_components:
            self.report(
                "components",
                "skipped: the sandbox installs none (Envoy plays the mesh's routing, "
                "Prometheus and a span receiver stand in for VictoriaMetrics and Jaeger)",
            )
            return {}
        settings = self.settings()
        components = components_for(self.lesson.components, settings)
        # Every local archive is checked before anything is installed.
        folder = self.chart_dir()
        archives = None
        if folder is not None:
            from kubelab.components.localcharts import lesson_archives

            archives = lesson_archives(folder, self.lesson.id, components, settings.tls)
        nodes = component_nodes(components, settings, self.helm(), self.kube, archives)
        results = run_dag(nodes, progress=self.progress)
        passes = [results]
        if settings.domain is None and self._wildcard_domain():
            # The gateway got a public IP: Gitea moves to gitea.<ip>.sslip.io, so
            # the releases whose values name the domain are upgraded (only those).
            settings = self.settings()
            components = components_for(self.lesson.components, settings)
            nodes = component_nodes(components, settings, self.helm(), self.kube, archives)
            results = run_dag(nodes, progress=self.progress)
            passes.append(results)
        for result in results:
            if ":" in result.name:
                continue
            release = next(r for c in components for r in c.releases if r.name == result.name)
            details = {"chart": release.chart, "version": release.version}
            if archives is not None:
                details["archive"] = str(archives[release.name])
            resource = CreatedResource(
                kind="HelmRelease",
                name=release.name,
                namespace=release.namespace,
                details=details,
            )
            self._update(functools.partial(LessonRecord.add_resource, resource=resource))
        counts: dict[str, int] = {}
        for result in results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        source = "" if folder is None else f" from the local charts in {folder}"
        self.report("components", f"{len(components)} components ready ({summary}){source}")
        return merge_outcomes(*passes)

    def _wildcard_domain(self, timeout: float = 180.0) -> bool:
        """Without --domain: name Gitea and the app after the gateway's public IP (sslip.io).

        Returns True when a domain was derived and recorded. Where the gateway has no
        LoadBalancer (kind, NodePort), they are reached with `kubelab open`. Dashboards are
        never served under such a name: it has no TLS, and their logins would cross it.
        """
        from kubelab.components.catalog import GATEWAY_RELEASE, ISTIO_NAMESPACE

        service = self.kube.get("v1", "Service", GATEWAY_RELEASE, ISTIO_NAMESPACE)
        if service is None or (service.get("spec") or {}).get("type") != "LoadBalancer":
            return False
        deadline = time.monotonic() + timeout
        while True:
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            address = (ingress or [{}])[0]
            if address.get("ip"):
                ip = str(address["ip"])
                domain = f"{ip.replace('.', '-')}.sslip.io"
                found = {"domain": domain, "gateway_url": f"http://{ip}"}
                self._update(functools.partial(_merge_details, found))
                self.report(
                    "components",
                    f"Gitea at gitea.{domain}, the app at app.{domain} (dashboards: "
                    "`kubelab open`, or --domain --tls --expose-dashboards)",
                )
                return True
            if address.get("hostname") or time.monotonic() > deadline:
                self.report(
                    "components",
                    "the gateway has no public IP for a wildcard DNS name: open the "
                    "dashboards with `kubelab open kiali` (or run up with --domain)",
                )
                return False
            time.sleep(self.poll * 10)
            service = self.kube.get("v1", "Service", GATEWAY_RELEASE, ISTIO_NAMESPACE) or {}

    def step_images(self) -> list[str]:
        """Gitea and the lesson's images; returns what was done or found, one line each."""
        if not self.provider.builds_images:
            self.report("images", "skipped: the sandbox runs app_backend from source")
            return []
        from kubelab.images.pipeline import build_lesson_images  # requests, only here

        registry = self.facts().registry
        if registry is None:
            raise KubelabError(f"the {self.provider.name} provider has no image registry")
        lines = build_lesson_images(self.lesson, self.kube, self.settings(), registry)
        self.report("images", "; ".join(lines) or "no images to build")
        return lines

    def step_deploy(self) -> tuple[int, int]:
        """Apply the lesson's objects; returns (objects, mutating API calls sent)."""
        settings = self.settings() if self.provider.installs_components else None
        rendered = render_for_cluster(self.loaded, self.facts(), settings)
        before = self.kube.mutations
        reset = bool(self.options.get("reset"))
        self.drift = {}
        for obj in apply_order([o.obj for o in rendered.objects]):
            meta = obj.get("metadata") or {}
            where = f"{obj.get('kind')} {meta.get('namespace') or ''}/{meta.get('name')}"
            # Changed since kubelab applied it: a student's work stays unless --reset, and
            # fields a controller set (Flagger, Argo Rollouts) are never fought over.
            drift = self.kube.apply_keeping_changes(obj, reset=reset)
            if drift:
                self.drift[where] = drift
            resource = CreatedResource(
                kind=str(obj.get("kind")),
                name=str(meta.get("name")),
                namespace=meta.get("namespace"),
                details={"apiVersion": obj.get("apiVersion")},
            )
            self._update(functools.partial(LessonRecord.add_resource, resource=resource))
        self._wait_for_deployments(rendered.objects)
        changed = self.kube.mutations - before
        what = f"{changed} changed" if changed else "nothing to change"
        self.report("deploy", f"{len(rendered.objects)} objects ({what}); their pods are ready")
        for where, drift in self.drift.items():
            if any(d.by_controller for d in drift):
                done = "left as it is (a controller manages it)"
            elif reset:
                done = "put back as the lesson deploys it"
            else:
                done = "left as it is; `kubelab up --reset` puts it back"
            fields = "; ".join(d.describe() for d in drift)
            self.report("deploy", f"{where} changed since it was deployed: {fields}: {done}")
        return len(rendered.objects), changed

    def _wait_for_deployments(self, objects: list[Any]) -> None:
        """Every Deployment rolled out and every bare Pod Ready, within ``ready_timeout``."""
        deadline = time.monotonic() + self.ready_timeout
        for obj in objects:
            left = max(deadline - time.monotonic(), 0.0)
            if obj.kind == "Deployment":
                self.kube.wait_rollout(
                    "Deployment", obj.name, obj.namespace, timeout=left, poll=self.poll
                )
            elif obj.kind == "Pod":
                self.kube.wait_condition(
                    "v1", "Pod", obj.name, obj.namespace, "Ready", left, poll=self.poll
                )

    def step_exercises(self) -> ExerciseOutcome | None:
        available = self.provider.available_components(self.lesson.components)
        first = next((e for e in self.lesson.exercises if exercise_available(e, available)), None)
        if first is None:
            self.report("exercises", "no exercise of this lesson runs on this provider")
            return None
        record = self.store.load().lesson(self.lesson.id)
        outcome = wait_for_exercise(
            self.lesson.id, first, check_context(self.provider, record), timeout=30, poll=1.0
        )
        if self.record_progress:
            record_progress(
                self.store, self.lesson.id, first.id, status=str(outcome.status), student=False
            )
        self.report("exercises", f"first exercise {first.id}: checks {outcome.status}")
        return outcome

    # -- down ------------------------------------------------------------------------------

    def down(self, all_components: bool = False) -> list[str]:
        """Remove the lesson's objects (by label), then components no other lesson needs."""
        from kubelab import homelock

        with homelock.exclusive(self.store.path.parent, "down"):
            return self._down(all_components)

    def _down(self, all_components: bool) -> list[str]:
        state = self.store.load()
        record = state.lessons.get(self.lesson.id)
        details = dict(record.details) if record else {}
        removed: list[str] = []
        if all_components and self.provider.owns_cluster:
            # The whole cluster goes: nothing in it needs removing first.
            removed += self.provider.teardown(details, everything=True)
            with self.store.transaction() as st:
                st.lessons.pop(self.lesson.id, None)
            return removed
        if record is not None and self.provider.installs_components and details.get("kubeconfig"):
            kinds = sorted(
                {
                    (str(r.details.get("apiVersion")), r.kind)
                    for r in record.resources
                    if r.kind != "HelmRelease" and r.details.get("apiVersion")
                }
            )
            selector = f"{LESSON_LABEL}={self.lesson.id}"
            removed += self.kube.delete_by_label(selector, kinds)
            others = [
                c
                for r in running_records(state)
                if r.lesson != self.lesson.id
                for c in find_lesson_components(r.lesson)
            ]
            settings = self.settings()
            mine = components_for(self.lesson.components, settings)
            keep = (
                {c.name for c in components_for(others, settings)} if not all_components else set()
            )
            if all_components:
                from kubelab.components import catalog

                mine = catalog.install_order(catalog.CATALOG)
            drop = [c for c in mine if c.name not in keep]
            # What kubelab applied beside the releases (the dashboards' Gateway and routes,
            # the viewer's ClusterRoleBinding, TLS objects), while their CRDs still exist.
            removed += self.kube.delete_objects(
                [obj for c in drop for obj in extra_manifests(c, settings)]
            )
            if drop:
                run_dag(removal_nodes(drop, self.helm()), progress=self.progress)
                removed += [f"helm release {r.name}" for c in drop for r in c.releases]
        removed += self._remove_class(state, details)
        removed += self.provider.teardown(details)
        with self.store.transaction() as st:
            st.lessons.pop(self.lesson.id, None)
        return removed

    def _remove_class(self, state: Any, details: dict[str, Any]) -> list[str]:
        """A class of this lesson goes with it: student namespaces, kubeconfig files."""
        klass = state.classes.get(self.lesson.id)
        if klass is None:
            return []
        if self.provider.installs_components and details.get("kubeconfig"):
            selector = f"{CLASS_LABEL}={self.lesson.id}"
            self.kube.delete_by_label(selector, [("v1", "Namespace")])
            from kubelab.classroom import policy

            policy.remove(self.kube, self.lesson.id)
        for student in klass.students:
            if student.kubeconfig:
                Path(student.kubeconfig).unlink(missing_ok=True)
        with self.store.transaction() as st:
            st.classes.pop(self.lesson.id, None)
        return [f"class of {len(klass.students)} students (namespaces, kubeconfig files)"]
