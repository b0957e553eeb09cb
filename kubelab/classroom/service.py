"""``kubelab class create|kubeconfigs|delete|status`` and ``kubelab grade``, on top of a lesson
that ``kubelab up`` has already brought up (components, images, the instructor's copy).

Creating a class is idempotent: the roster and every rendered object are validated before
the first API call (a bad roster creates nothing), objects are applied with server-side
apply, and the class is recorded after each student, so running the command again after
an interruption finishes the job instead of failing on what exists.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubelab import paths, yamlio
from kubelab.checks.registry import CheckContext
from kubelab.classroom import access
from kubelab.classroom.grade import GradeOptions, grade_class
from kubelab.classroom.model import ClassGrade
from kubelab.classroom.roster import Student, load_roster
from kubelab.cluster.kube import (
    CLASS_LABEL,
    KUBECONFIG_EXTENSION,
    STUDENT_LABEL,
    KindNotServed,
    Kube,
    kubeconfig_expiry,
)
from kubelab.errors import StateError, UsageError, ValidationFailed
from kubelab.i18n import Lang
from kubelab.k8s.workloads import apply_order
from kubelab.lessons.loader import LoadedLesson
from kubelab.lessons.model import Exercise
from kubelab.lessons.runner import check_context, exercise_available, lesson_namespace
from kubelab.state import ClassRecord, LessonRecord, StateStore, StudentRecord, now

DEFAULT_HOURS = 12.0
MIN_HOURS, MAX_HOURS = 1.0, 24.0 * 7
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def snapshots_dir(lesson_id: str) -> Path:
    return paths.home_dir() / "classes" / lesson_id / "grades"


def save_snapshot(grade: ClassGrade) -> Path:
    folder = snapshots_dir(grade.lesson)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^0-9A-Za-z]", "", grade.taken_at)
    path = folder / f"{stem}.json"
    number = 1
    while path.exists():  # never overwrite an earlier run
        number += 1
        path = folder / f"{stem}-{number}.json"
    paths.write_private(path, json.dumps(grade.to_json(), indent=1))
    return path


def load_history(lesson_id: str) -> list[ClassGrade]:
    """Every stored snapshot of ``lesson_id``'s class, oldest first (unreadable ones skipped)."""
    folder = snapshots_dir(lesson_id)
    out: list[ClassGrade] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(ClassGrade.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, KeyError, TypeError, OSError):
            continue
    return sorted(out, key=lambda g: g.taken_at)


@dataclass
class ClassTools:
    """What a class needs from the lesson's cluster; ``context`` builds the check context."""

    kube: Kube
    admin_kubeconfig: dict[str, Any]
    admin_context: str | None  # the context `kubelab up` used (None: the current one)
    admin_folder: Path | None  # where the admin kubeconfig is (relative CA file paths)
    registry: str | None
    context: Callable[[], CheckContext]
    available: set[str]  # components the cluster has (exercises needing others are skipped)
    # (user, read-only registry token) for the students' pull Secrets; asked for once.
    pull_token: Callable[[], tuple[str, str]]


def tools_for(loaded: LoadedLesson, store: StateStore) -> ClassTools:
    """The cluster of a lesson that ``kubelab up`` brought up (else a clear error)."""
    from kubelab.components.values import InstallSettings
    from kubelab.images.pipeline import read_only_pull_token
    from kubelab.providers import get_provider

    lesson_id = loaded.lesson.id
    record = store.load().lessons.get(lesson_id)
    if record is None or "deploy" not in record.steps_done or not record.provider:
        raise StateError(
            f"lesson {lesson_id} is not up",
            hint=f"Run `kubelab up {lesson_id} --provider ...` first: a class uses its "
            "cluster, components and images.",
        )
    provider = get_provider(record.provider)
    if not provider.hosts_classes:
        raise UsageError(
            f"a class needs a real cluster: the {provider.name} runs one copy of the app on "
            "this machine",
            hint=f"kubelab up {lesson_id} --provider existing (or kind, or a cloud cluster), "
            "then create the class there.",
        )
    kubeconfig = Path(record.details["kubeconfig"])
    return ClassTools(
        Kube(kubeconfig, context=record.details.get("context")),
        (yamlio.load_all_yaml(kubeconfig.read_text(encoding="utf-8")) or [{}])[0],
        record.details.get("context"),
        kubeconfig.parent,
        record.details.get("registry"),
        lambda: check_context(provider, record),
        provider.available_components(loaded.lesson.components),
        lambda: read_only_pull_token(Kube(kubeconfig), InstallSettings()),
    )


class ClassService:
    def __init__(
        self,
        loaded: LoadedLesson,
        store: StateStore,
        tools: ClassTools,
        progress: Progress = _quiet,
    ) -> None:
        self.loaded = loaded
        self.lesson = loaded.lesson
        self.store = store
        self.tools = tools
        self.kube = tools.kube
        self.progress = progress
        self.namespace = lesson_namespace(self.lesson)
        self._pull_credentials: tuple[str, str] | None = None
        self.injection = any(n.istio_injection for n in self.lesson.namespaces) or not (
            self.lesson.namespaces
        )

    # ----------------------------------------------------------------- rendering

    def student_parts(self, student: Student) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(namespace and access objects, the lesson's app) of one student, validated."""
        from kubelab.images.pipeline import PULL_SECRET
        from kubelab.lessons.plan import PLACEHOLDER_REGISTRY, render

        namespace = student.namespace(self.namespace)
        pull = [PULL_SECRET] if self.lesson.images and self.tools.registry else None
        rendered = render(
            self.loaded,
            self.tools.registry or PLACEHOLDER_REGISTRY,
            pull,
            # No ingress Gateway per student: they share the mesh; checks go in-mesh.
            {"gateway": {"enabled": False}},
            namespaces={self.namespace: namespace},
            labels=access.class_labels(self.lesson.id, student),
        )
        app = [o.obj for o in rendered.objects if o.obj.get("kind") != "Namespace"]
        rules = access.student_rules(self.lesson.components, app)
        identity = access.access_objects(
            self.lesson.id, student, namespace, rules, istio_injection=self.injection
        )
        return identity, app

    def workload_policy(
        self, identity: list[dict[str, Any]], app: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The admission policy bounding what students change in the Deployments and
        Rollouts their Role lets them write (none when it lets them write neither), from
        one student's :meth:`student_parts` (every student's Role and app are alike)."""
        from kubelab.classroom import policy
        from kubelab.images.build import image_ref
        from kubelab.images.pipeline import ORG
        from kubelab.lessons.plan import PLACEHOLDER_REGISTRY

        rules = next(o for o in identity if o["kind"] == "Role")["rules"]
        if not any(access.writes(rules, g, r) for g, r in policy.GUARDED):
            return []
        registry = self.tools.registry or PLACEHOLDER_REGISTRY
        return policy.workload_policy(
            self.lesson.id,
            class_label=CLASS_LABEL,
            labels=access.class_labels(self.lesson.id),
            image_prefixes=[image_ref(registry, ORG, i.name, "") for i in self.lesson.images],
            containers=policy.app_containers(app, registry),
            identity=access.IDENTITY,
        )

    def _apply_workload_policy(self, objects: list[dict[str, Any]]) -> None:
        from kubelab.classroom import policy

        if not objects:
            return
        version = self.kube.version()
        try:
            if policy.supported(version):
                for obj in objects:
                    self.kube.apply(obj)
                return
        except KindNotServed:
            pass  # a server that says 1.30+ without the API (the sandbox's)
        self.progress(
            f"warning: this cluster (Kubernetes {version}) has no ValidatingAdmissionPolicy "
            f"(1.{policy.MIN_MINOR}+): students may change anything in the Deployments "
            "and Rollouts they patch, within their namespace's quota"
        )

    def _pull_secret(self, namespace: str, student: Student) -> None:
        """A registry pull Secret in the student's namespace with a read-only token: never
        the build token of the lesson's namespace, which a student's pod could read."""
        from kubelab.images.kaniko import registry_pull_secret
        from kubelab.images.pipeline import PULL_SECRET

        if not (self.lesson.images and self.tools.registry):
            return
        if self._pull_credentials is None:
            self._pull_credentials = self.tools.pull_token()
        user, token = self._pull_credentials
        secret = registry_pull_secret(
            PULL_SECRET,
            namespace,
            self.tools.registry,
            user,
            token,
            labels=access.class_labels(self.lesson.id, student),
        )
        self.kube.apply(secret)

    # ----------------------------------------------------------------- tokens

    def _issue(
        self, student: Student, out_dir: Path, hours: float
    ) -> tuple[Path, access.IssuedToken]:
        namespace = student.namespace(self.namespace)
        token, expires = self.kube.create_token(namespace, access.IDENTITY, int(hours * 3600))
        issued = access.IssuedToken(token, expires)
        config = access.student_kubeconfig(
            self.tools.admin_kubeconfig,
            self.lesson.id,
            student,
            namespace,
            issued,
            context=self.tools.admin_context,
            folder=self.tools.admin_folder,
        )
        path = out_dir / f"{student.id}.kubeconfig"
        paths.write_private(path, yamlio.dump_yaml(config))
        return path, issued

    # ----------------------------------------------------------------- commands

    def create(self, roster: Path, out_dir: Path, hours: float = DEFAULT_HOURS) -> ClassRecord:
        _check_hours(hours)
        students = load_roster(roster)
        existing = self.store.load().classes.get(self.lesson.id)
        if existing is not None and Path(existing.roster).resolve() != roster.resolve():
            # The same class again (resume) is fine; a different roster is a new class.
            known = {s.id for s in existing.students}
            if not known <= {s.id for s in students}:
                raise UsageError(
                    f"a class of {self.lesson.id} exists with other students "
                    f"(from {existing.roster})",
                    hint=f"`kubelab class delete {self.lesson.id}` first, or use that roster.",
                )
        out_dir = out_dir.resolve()
        plans = [(s, self.student_parts(s)) for s in students]  # validate everything first
        guard = self.workload_policy(*plans[0][1]) if plans else []
        self._check_namespaces(roster, students)
        out_dir.mkdir(parents=True, exist_ok=True)
        with self.store.transaction() as state:
            record = state.classes.get(self.lesson.id) or ClassRecord(
                lesson=self.lesson.id, roster=str(roster.resolve()), out_dir=str(out_dir)
            )
            record.roster, record.out_dir = str(roster.resolve()), str(out_dir.resolve())
            state.classes[self.lesson.id] = record
        self._apply_workload_policy(guard)
        for index, (student, (identity, app)) in enumerate(plans, start=1):
            namespace = student.namespace(self.namespace)
            self.progress(f"[{index}/{len(plans)}] {student.id}: namespace {namespace}")
            for obj in identity:  # namespace, ServiceAccount, Role, RoleBinding first
                self.kube.apply(obj)
            self._pull_secret(namespace, student)
            for ordered in apply_order(app):
                self.kube.apply(ordered)
            path, issued = self._issue(student, out_dir, hours)
            with self.store.transaction() as state:
                record = state.classes[self.lesson.id]
                record.students = [r for r in record.students if r.id != student.id] + [
                    StudentRecord(
                        id=student.id,
                        name=student.name,
                        email=student.email,
                        namespace=namespace,
                        kubeconfig=str(path),
                        token_expires=issued.expires_text,
                    )
                ]
                record.updated_at = now()
        return self.store.load().classes[self.lesson.id]

    def _check_namespaces(self, roster: Path, students: Sequence[Student]) -> None:
        """Every student's namespace name is valid and is not somebody else's namespace
        (``istio-system`` for a student named ``system``): refuse before creating anything."""
        problems = []
        for student in students:
            namespace = student.namespace(self.namespace)
            where = f"{roster}:{student.line}"
            if len(namespace) > 63:
                problems.append(
                    f"{where}: namespace {namespace} would be {len(namespace)} characters "
                    "(at most 63): use a shorter id"
                )
                continue
            live = self.kube.get("v1", "Namespace", namespace)
            labels = ((live or {}).get("metadata") or {}).get("labels") or {}
            if live is not None and (
                labels.get(CLASS_LABEL) != self.lesson.id or labels.get(STUDENT_LABEL) != student.id
            ):
                problems.append(
                    f"{where}: namespace {namespace} already exists and is not {student.id}'s "
                    "class namespace: use another id"
                )
        if problems:
            raise ValidationFailed(
                f"{len(problems)} student(s) cannot get a namespace; nothing was created",
                details=problems,
                hint="Change those ids in the roster and run the same command again.",
            )

    def record(self) -> ClassRecord:
        record = self.store.load().classes.get(self.lesson.id)
        if record is None:
            raise StateError(
                f"there is no class of {self.lesson.id}",
                hint=f"kubelab class create --roster roster.csv {self.lesson.id}",
            )
        return record

    def students(self, roster: Path | None = None) -> list[Student]:
        if roster is not None:
            return load_roster(roster)
        return [Student(s.id, s.name, s.email) for s in self.record().students]

    def renew(self, hours: float = DEFAULT_HOURS, only: Sequence[str] = ()) -> ClassRecord:
        """Fresh tokens (new kubeconfig files) for every student, or those in ``only``."""
        _check_hours(hours)
        record = self.record()
        unknown = set(only) - {s.id for s in record.students}
        if unknown:
            raise UsageError(f"not in the class: {', '.join(sorted(unknown))}")
        out_dir = Path(record.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for s in record.students:
            if only and s.id not in only:
                continue
            path, issued = self._issue(Student(s.id, s.name, s.email), out_dir, hours)
            with self.store.transaction() as state:
                for r in state.classes[self.lesson.id].students:
                    if r.id == s.id:
                        r.kubeconfig, r.token_expires = str(path), issued.expires_text
            self.progress(f"{s.id}: new kubeconfig, valid until {issued.expires_text}")
        return self.record()

    def delete(self) -> list[str]:
        """Every student's namespace (and so everything in it) and kubeconfig file."""
        done: list[str] = []
        record = self.store.load().classes.get(self.lesson.id)
        namespaces = self.kube.list(
            "v1", "Namespace", label_selector=f"{CLASS_LABEL}={self.lesson.id}"
        )
        known = {s.id for s in record.students} if record is not None else None
        for ns in namespaces:
            name = ns["metadata"]["name"]
            student_id = (ns["metadata"].get("labels") or {}).get(STUDENT_LABEL)
            if student_id is None or (known is not None and student_id not in known):
                continue  # only namespaces made for a student of this class
            if self.kube.delete("v1", "Namespace", name):
                done.append(f"deleted namespace {name}")
        from kubelab.classroom import policy

        done += policy.remove(self.kube, self.lesson.id)
        if record is not None:
            for s in record.students:
                if s.kubeconfig and Path(s.kubeconfig).exists():
                    Path(s.kubeconfig).unlink()
                    done.append(f"removed {s.kubeconfig}")
        with self.store.transaction() as state:
            state.classes.pop(self.lesson.id, None)
        return done

    def gradable(self) -> tuple[list[Exercise], dict[str, str]]:
        exercises, skipped = [], {}
        for exercise in self.lesson.exercises:
            if exercise_available(exercise, self.tools.available):
                exercises.append(exercise)
            else:
                missing = ", ".join(sorted(exercise.needed_components() - self.tools.available))
                skipped[exercise.id] = f"needs {missing}, which this cluster does not have"
        return exercises, skipped

    def grade(
        self,
        students: Sequence[Student],
        options: GradeOptions | None = None,
        lang: Lang = "en",
    ) -> ClassGrade:
        exercises, skipped = self.gradable()
        ctx = self.tools.context()
        # Many students at once: keep each traffic check's own burst small.
        ctx.concurrency = min(ctx.concurrency, 50)
        return grade_class(
            self.lesson, students, exercises, ctx, self.namespace, options, skipped, lang=lang
        )


def _check_hours(hours: float) -> None:
    if not MIN_HOURS <= hours <= MAX_HOURS:
        raise UsageError(
            f"--hours must be between {MIN_HOURS:g} and {MAX_HOURS:g} (got {hours:g})",
            hint="A class day is 8-12 hours; `kubelab class kubeconfigs` renews tokens.",
        )


def expiry_lines(record: ClassRecord, at: dt.datetime | None = None) -> list[str]:
    """A line per student whose kubeconfig expired or expires within an hour."""
    at = at or dt.datetime.now(dt.UTC)
    lines = []
    for s in record.students:
        if not s.token_expires:
            continue
        expires = dt.datetime.strptime(s.token_expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        if expires <= at:
            lines.append(f"{s.id}: kubeconfig expired at {s.token_expires}")
        elif expires - at < dt.timedelta(hours=1):
            lines.append(f"{s.id}: kubeconfig expires at {s.token_expires} (within the hour)")
    return lines


def join_class(kubeconfig: Path, store: StateStore | None = None) -> LessonRecord:
    """Record a student's class kubeconfig as their running lesson, so that ``kubelab
    exercise``, ``hint``, ``check`` and ``progress`` work in their own namespace."""
    from kubelab.lessons.loader import find_lesson

    store = store or StateStore()
    not_ours = UsageError(
        f"{kubeconfig} is not a kubelab class kubeconfig",
        hint="Use the <id>.kubeconfig file your instructor made with `kubelab class create`.",
    )
    try:
        config = (yamlio.load_all_yaml(kubeconfig.read_text(encoding="utf-8")) or [{}])[0]
    except OSError as exc:
        raise UsageError(f"cannot read {kubeconfig}: {exc.strerror}") from None
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
        raise not_ours from None  # binary, or not YAML at all
    if not isinstance(config, dict):
        raise not_ours
    found = kubeconfig_expiry(config)
    data = next(
        (
            e.get("extension") or {}
            for e in config.get("extensions") or []
            if isinstance(e, dict) and e.get("name") == KUBECONFIG_EXTENSION
        ),
        {},
    )
    if found is None or not data.get("lesson") or not data.get("namespace"):
        raise not_ours
    lesson_id = str(data["lesson"])
    find_lesson(lesson_id)  # this kubelab knows the lesson (else: upgrade it)
    with store.transaction() as state:
        record = state.lesson(lesson_id)
        record.provider = "existing"
        record.steps_done = sorted(set(record.steps_done) | {"deploy"})
        record.details.update(
            {
                "kubeconfig": str(kubeconfig.resolve()),
                "namespace": str(data["namespace"]),
                "student": found[0],
                "expires": str(data.get("expires")),
            }
        )
        return copy.deepcopy(record)
