"""The lesson format (``labs/<id>/lesson.yaml``) as msgspec structs (``kubelab.base``).

Shape and value rules live here (unknown keys, types, weights summing to 100, the check
type registry); rules that need the whole lesson or the file system (duplicate ids,
files that must exist) live in ``kubelab.lessons.loader`` so that every problem is
reported with its line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

import msgspec
from msgspec import Meta

from kubelab.base import LocalizedText, StrictModel
from kubelab.checks.types import CHECK_TYPES, CheckSpec, Name, Namespace, Slug
from kubelab.i18n import Lang

if TYPE_CHECKING:
    Check = CheckSpec
else:
    # A check is any registered type, chosen by its ``type:`` key (the struct's tag).
    Check = Union[tuple(CHECK_TYPES.values())]  # noqa: UP007

RelPath = Annotated[str, Meta(min_length=1, pattern=r"^[^/].*$")]


class ImageSpec(StrictModel, frozen=True, kw_only=True):
    """An image the lesson builds from the project's sources, one tag per version."""

    name: Slug
    context: RelPath  # build context, relative to the project root
    dockerfile: str = "Dockerfile"
    versions: Annotated[list[Slug], Meta(min_length=1)]
    build_arg: str = "VERSION"  # the build arg receiving the version


class NamespaceSpec(StrictModel, frozen=True, kw_only=True):
    name: Namespace
    istio_injection: bool = False
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class DeploySpec(StrictModel, frozen=True, kw_only=True):
    """A Helm release of a chart of the project, with the lesson's values."""

    chart: RelPath  # chart folder, relative to the project root
    release: Name
    namespace: Namespace
    values: dict[str, Any] = msgspec.field(default_factory=dict)


class OfflinePath(StrictModel, frozen=True, kw_only=True):
    """How an exercise is done where the components' web UIs are missing (the sandbox):
    its own instructions (``kubelab graph`` instead of Kiali, say), and which of the
    exercise's checks still apply there. See docs/authoring.md, "Offline paths"."""

    instructions: LocalizedText
    # When given, it replaces the exercise's title on the offline path.
    title: LocalizedText | None = None
    # When given, they replace the exercise's hints on the offline path.
    hints: list[LocalizedText] = msgspec.field(default_factory=list)
    # Replaces the exercise's ``requires`` (e.g. kiali) on the offline path.
    requires: list[str] = msgspec.field(default_factory=list)
    # Ids of the exercise's checks that apply offline (default: all of them).
    checks: list[str] | None = None


class Exercise(StrictModel, frozen=True, kw_only=True):
    id: Slug
    title: LocalizedText
    instructions: LocalizedText
    hints: Annotated[list[LocalizedText], Meta(min_length=1)]
    solve: RelPath  # script, relative to the lesson folder
    # Components the exercise needs beyond its checks' own (e.g. kiali).
    requires: list[str] = msgspec.field(default_factory=list)
    checks: Annotated[list[Check], Meta(min_length=1)]
    # Later exercises that start from this one's end state and change it: when one of
    # them passes, grading counts this one as done even though its own checks no longer
    # hold (e.g. a 90/10 split after the student moved on to 50/50).
    superseded_by: list[str] = msgspec.field(default_factory=list)
    # An observation exercise: its checks already pass before its solve script runs
    # (kubelab test then does not expect them to fail first).
    passes_before_solve: bool = False
    # What the exercise is worth in a grade; its checks' ``points`` split it (partial
    # credit). See docs/grading.md.
    points: Annotated[float, Meta(gt=0, le=1000)] = 1
    offline: OfflinePath | None = None

    def offline_variant(self) -> Exercise:
        """The exercise as done on its offline path (itself when it has none). Kept checks
        keep their ids, so progress and grades name them the same on both paths."""
        path = self.offline
        if path is None:
            return self
        kept = [
            msgspec.structs.replace(check, id=self.check_id(i))
            for i, check in enumerate(self.checks)
            if path.checks is None or self.check_id(i) in path.checks
        ]
        return msgspec.structs.replace(
            self,
            title=path.title or self.title,
            instructions=path.instructions,
            hints=path.hints or self.hints,
            requires=path.requires,
            checks=kept,
            offline=None,
        )

    def check_id(self, index: int) -> str:
        """The check's id: its own, else its type (numbered when a type repeats)."""
        check = self.checks[index]
        if check.id:
            return check.id
        same = [i for i, c in enumerate(self.checks) if c.type == check.type and not c.id]
        return check.type if len(same) == 1 else f"{check.type}-{same.index(index) + 1}"

    def in_namespace(self, lesson_namespace: str, namespace: str) -> Exercise:
        """This exercise with every check aimed at ``lesson_namespace`` aimed at
        ``namespace`` instead (a student of a class works in their own namespace); each
        check type knows where it names a namespace (``CheckSpec.retarget``)."""
        if lesson_namespace == namespace:
            return self
        checks = [check.retarget(lesson_namespace, namespace) for check in self.checks]
        return msgspec.structs.replace(self, checks=checks)

    def needed_components(self) -> set[str]:
        """Components this exercise cannot be done without."""
        needed = set(self.requires)
        for check in self.checks:
            needed |= check.needs
        return needed


class Lesson(StrictModel, frozen=True, kw_only=True):
    id: Slug
    title: LocalizedText
    summary: LocalizedText
    prerequisites: list[LocalizedText] = msgspec.field(default_factory=list)
    components: list[str] = msgspec.field(default_factory=list)
    images: list[ImageSpec] = msgspec.field(default_factory=list)
    namespaces: list[NamespaceSpec] = msgspec.field(default_factory=list)
    deploy: list[DeploySpec] = msgspec.field(default_factory=list)
    # Extra YAML files, relative to the lesson folder.
    manifests: list[RelPath] = msgspec.field(default_factory=list)
    exercises: Annotated[list[Exercise], Meta(min_length=1)]

    def exercise(self, exercise_id: str) -> Exercise | None:
        return next((e for e in self.exercises if e.id == exercise_id), None)

    def offline_variant(self) -> Lesson:
        """The lesson with every exercise on its offline path (where it has one)."""
        if all(e.offline is None for e in self.exercises):
            return self
        exercises = [e.offline_variant() for e in self.exercises]
        return msgspec.structs.replace(self, exercises=exercises)

    def text(self, value: LocalizedText, lang: Lang) -> str:
        return value.get(lang)
