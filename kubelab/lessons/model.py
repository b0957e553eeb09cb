"""The lesson format (``labs/<id>/lesson.yaml``) as pydantic models.

Shape and value rules live here (unknown keys, types, weights summing to 100, the check
type registry); rules that need the whole lesson or the file system (duplicate ids,
files that must exist) live in ``kubelab.lessons.loader`` so that every problem is
reported with its line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Field, Tag

from kubelab.base import LocalizedText, StrictModel
from kubelab.checks.types import CHECK_TYPES, CheckSpec, Name, Namespace, Slug
from kubelab.i18n import Lang


def _check_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        tag = value.get("type")
        return tag if isinstance(tag, str) else None
    return getattr(value, "type", None)


def _check_union() -> Any:
    members = tuple(Annotated[cls, Tag(name)] for name, cls in CHECK_TYPES.items())
    return Annotated[Union[members], Discriminator(_check_tag)]  # noqa: UP007


if TYPE_CHECKING:
    Check = CheckSpec
else:
    # A check is any registered type, chosen by its ``type:`` key.
    Check = _check_union()

RelPath = Annotated[str, Field(min_length=1, pattern=r"^[^/].*$")]


class ImageSpec(StrictModel):
    """An image the lesson builds from the project's sources, one tag per version."""

    name: Slug
    context: RelPath = Field(description="build context, relative to the project root")
    dockerfile: str = "Dockerfile"
    versions: list[Slug] = Field(min_length=1)
    build_arg: str = Field(default="VERSION", description="build arg receiving the version")


class NamespaceSpec(StrictModel):
    name: Namespace
    istio_injection: bool = False
    labels: dict[str, str] = Field(default_factory=dict)


class DeploySpec(StrictModel):
    """A Helm release of a chart of the project, with the lesson's values."""

    chart: RelPath = Field(description="chart folder, relative to the project root")
    release: Name
    namespace: Namespace
    values: dict[str, Any] = Field(default_factory=dict)


class Exercise(StrictModel):
    id: Slug
    title: LocalizedText
    instructions: LocalizedText
    hints: list[LocalizedText] = Field(min_length=1)
    solve: RelPath = Field(description="script, relative to the lesson folder")
    requires: list[str] = Field(
        default_factory=list,
        description="components the exercise needs beyond its checks' own (e.g. kiali)",
    )
    checks: list[Check] = Field(min_length=1)
    superseded_by: list[str] = Field(
        default_factory=list,
        description="later exercises that start from this one's end state and change it: "
        "when one of them passes, grading counts this one as done even though its own "
        "checks no longer hold (e.g. a 90/10 split after the student moved on to 50/50)",
    )
    passes_before_solve: bool = Field(
        default=False,
        description="an observation exercise: its checks already pass before its solve "
        "script runs (kubelab test then does not expect them to fail first)",
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
        return self.model_copy(update={"checks": checks})

    def needed_components(self) -> set[str]:
        """Components this exercise cannot be done without."""
        needed = set(self.requires)
        for check in self.checks:
            needed |= check.needs
        return needed


class Lesson(StrictModel):
    id: Slug
    title: LocalizedText
    summary: LocalizedText
    prerequisites: list[LocalizedText] = Field(default_factory=list)
    components: list[str] = Field(default_factory=list)
    images: list[ImageSpec] = Field(default_factory=list)
    namespaces: list[NamespaceSpec] = Field(default_factory=list)
    deploy: list[DeploySpec] = Field(default_factory=list)
    manifests: list[RelPath] = Field(
        default_factory=list, description="extra YAML files, relative to the lesson folder"
    )
    exercises: list[Exercise] = Field(min_length=1)

    def exercise(self, exercise_id: str) -> Exercise | None:
        return next((e for e in self.exercises if e.id == exercise_id), None)

    def text(self, value: LocalizedText, lang: Lang) -> str:
        return value.get(lang)
