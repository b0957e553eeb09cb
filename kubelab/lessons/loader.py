"""Load ``lesson.yaml`` files and report every problem as ``file:line: field: message``.

YAML is read by one parser, PyYAML's C loader with the YAML 1.2 core schema (``010`` is
10, ``1:30`` and ``2026-12-01`` are text, only true/false are booleans, a repeated key is
an error). When something is wrong, the same loader composes the file again into nodes,
which know their lines, to point every problem at its line. msgspec validates the shape
(``kubelab.lessons.model``, every problem of it found by ``kubelab.base.problems``); then
the rules that need the whole lesson or the file system run here, and each
``deploy[i].values`` is checked against its chart's ``values.schema.json``
(``kubelab.lessons.chart_values``). All problems are collected and raised together as one
:class:`~kubelab.errors.ValidationFailed`, one line each.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import yaml

from kubelab import paths
from kubelab.base import Loc, problems
from kubelab.components.catalog import CATALOG
from kubelab.errors import UsageError, ValidationFailed
from kubelab.lessons.model import Lesson
from kubelab.yamlio import load_all_yaml

if TYPE_CHECKING:
    from kubelab.providers.base import Provider

LESSON_FILE = "lesson.yaml"


@dataclass(frozen=True)
class Problem:
    """One problem of a lesson file, located as precisely as the YAML allows."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


@dataclass(frozen=True)
class LoadedLesson:
    lesson: Lesson
    path: Path  # the lesson.yaml file

    @property
    def folder(self) -> Path:
        return self.path.parent

    def on(self, provider: Provider) -> LoadedLesson:
        """The lesson as done on ``provider``'s clusters: on their offline paths where the
        provider has no web UIs (the sandbox)."""
        if not provider.offline:
            return self
        return dataclasses.replace(self, lesson=self.lesson.offline_variant())


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _locate(doc: Any, loc: Loc) -> int:
    """The line of the deepest part of ``loc`` present in ``doc`` (a composed node)."""
    line, node = 1, doc
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            value = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, _ in node.value if k.value == part), None)
            line = key.start_mark.line + 1 if key is not None else line
            node = value
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            node = None
    if isinstance(node, yaml.MappingNode) and node.value:
        # An error about a whole mapping points at its first key rather than its parent.
        line = max(line, node.value[0][0].start_mark.line + 1)
    return line


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _LessonLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's C loader with the YAML 1.2 core schema's scalars, and repeated keys as
    errors. PyYAML alone is YAML 1.1, where ``yes`` is true, ``010`` is 8 and ``1:30`` is
    90: a lesson must mean what an author who reads YAML 1.2 documentation wrote."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first on line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        text = str(self.construct_scalar(node))
        sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)


_CORE = {  # YAML 1.2 core schema: tag -> (pattern, first characters)
    "tag:yaml.org,2002:bool": (r"true|True|TRUE|false|False|FALSE", "tTfF"),
    "tag:yaml.org,2002:int": (r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    "tag:yaml.org,2002:float": (
        r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
        r"|[-+]?\.(inf|Inf|INF)|\.nan|\.NaN|\.NAN",
        "-+.0123456789",
    ),
}
_LessonLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in _CORE and tag != "tag:yaml.org,2002:timestamp"
    ]
    for first, resolvers in _LessonLoader.yaml_implicit_resolvers.items()
}
for _tag, (_pattern, _first) in _CORE.items():
    _LessonLoader.add_implicit_resolver(_tag, re.compile(rf"^(?:{_pattern})$"), list(_first))
_LessonLoader.add_constructor("tag:yaml.org,2002:int", _LessonLoader.construct_yaml_int)
TOO_DEEP = "the YAML is nested too deeply to be a lesson"


def _read_text(path: Path, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{shown}: no such file", hint="Give a lesson folder or its lesson.yaml."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            f"{shown} cannot be read", details=[f"{shown}:1: cannot read file: {exc}"]
        ) from None


def _yaml_problem(exc: yaml.YAMLError, shown: str) -> ValidationFailed:
    """A YAML error as one problem at its line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        if exc.context and exc.problem:
            problem = f"{' '.join(str(exc.context).split())}: {problem}"
    else:
        line, problem = 1, " ".join(str(exc).split())
    if "nesting depth" in problem:  # libyaml's own limit (newer builds) says it so
        return ValidationFailed(f"{shown} is not a lesson", details=[f"{shown}:1: {TOO_DEEP}"])
    return ValidationFailed(
        f"{shown} is not valid YAML", details=[f"{shown}:{line}: invalid YAML: {problem}"]
    )


def _check_document(doc: Any, shown: str) -> None:
    if doc is None:
        raise ValidationFailed(f"{shown} is empty", details=[f"{shown}:1: the file is empty"])
    if not isinstance(doc, dict):
        raise ValidationFailed(
            f"{shown} is not a lesson",
            details=[f"{shown}:1: expected a mapping with id, title, exercises, ..."],
        )


def _inside(folder: Path, relative: str) -> bool:
    """Whether ``folder / relative`` stays inside ``folder`` (``..`` and symlinks out of
    it do not: a lesson reads and runs only its own files)."""
    return (folder / relative).resolve().is_relative_to(folder.resolve())


def _outside(relative: str, where: str) -> str:
    return f"{relative} is outside {where}; a lesson may only name files inside it"


def _semantic_problems(lesson: Lesson, folder: Path) -> Iterable[tuple[Loc, str]]:
    """Rules over the whole lesson and the files it points at."""
    if lesson.id != folder.name:
        yield ("id",), f"must match the lesson folder name {folder.name!r}"
    for i, name in enumerate(lesson.components):
        if name not in CATALOG:
            close = difflib.get_close_matches(name, list(CATALOG), n=1)
            tip = f"; did you mean {close[0]!r}?" if close else ""
            yield (
                ("components", i),
                f"unknown component {name!r}{tip} (known: {', '.join(CATALOG)})",
            )
        elif name in lesson.components[:i]:
            yield ("components", i), f"component {name!r} is listed twice"
    root = paths.data_root()
    for i, image in enumerate(lesson.images):
        if not _inside(root, image.context):
            yield ("images", i, "context"), _outside(image.context, "kubelab's project folder")
        elif not (root / image.context / image.dockerfile).is_file():
            yield ("images", i, "context"), f"no {image.dockerfile} in {image.context}/"
    for i, deploy in enumerate(lesson.deploy):
        if not _inside(root, deploy.chart):
            yield ("deploy", i, "chart"), _outside(deploy.chart, "kubelab's project folder")
        elif not (root / deploy.chart / "Chart.yaml").is_file():
            yield ("deploy", i, "chart"), f"no Helm chart at {deploy.chart}/ (Chart.yaml missing)"
    for i, manifest in enumerate(lesson.manifests):
        if not _inside(folder, manifest):
            yield ("manifests", i), _outside(manifest, "the lesson folder")
            continue
        if not (folder / manifest).is_file():
            yield ("manifests", i), f"file {manifest} does not exist in {folder.name}/"
            continue
        try:
            load_all_yaml((folder / manifest).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            yield ("manifests", i), f"{manifest} is not valid YAML{at}: {problem}"
    seen: dict[str, int] = {}
    for i, exercise in enumerate(lesson.exercises):
        if exercise.id in seen:
            yield (
                ("exercises", i, "id"),
                f"duplicate exercise id {exercise.id!r} (also exercises[{seen[exercise.id]}])",
            )
        seen.setdefault(exercise.id, i)
        script = folder / exercise.solve
        if not _inside(folder, exercise.solve):
            yield ("exercises", i, "solve"), _outside(exercise.solve, "the lesson folder")
        elif not script.is_file():
            yield ("exercises", i, "solve"), f"solve script {exercise.solve} does not exist"
        elif not os.access(script, os.X_OK):
            yield (
                ("exercises", i, "solve"),
                f"solve script {exercise.solve} is not executable (chmod +x it)",
            )
        later = {e.id for e in lesson.exercises[i + 1 :]}
        for j, other in enumerate(exercise.superseded_by):
            if other not in later:
                yield (
                    ("exercises", i, "superseded_by", j),
                    f"{other!r} is not a later exercise of this lesson",
                )
        for j, component in enumerate(exercise.requires):
            if component not in lesson.components:
                yield (
                    ("exercises", i, "requires", j),
                    f"component {component!r} is not in the lesson's components",
                )
        if exercise.offline is not None:
            for j, component in enumerate(exercise.offline.requires):
                if component not in lesson.components:
                    yield (
                        ("exercises", i, "offline", "requires", j),
                        f"component {component!r} is not in the lesson's components",
                    )
            ids = [exercise.check_id(k) for k in range(len(exercise.checks))]
            for j, cid in enumerate(exercise.offline.checks or []):
                if cid not in ids:
                    yield (
                        ("exercises", i, "offline", "checks", j),
                        f"{cid!r} is not a check of this exercise (its checks: {', '.join(ids)})",
                    )
            if exercise.offline.checks == []:
                yield (
                    ("exercises", i, "offline", "checks"),
                    "an offline path needs at least one check (omit the list to keep all)",
                )
        check_ids: dict[str, int] = {}
        for j, check in enumerate(exercise.checks):
            for component in sorted(check.needs - set(lesson.components)):
                yield (
                    ("exercises", i, "checks", j, "type"),
                    f"a {check.type} check needs component {component!r}; add it to components",
                )
            cid = exercise.check_id(j)
            if cid in check_ids:
                yield (
                    ("exercises", i, "checks", j, "id"),
                    f"duplicate check id {cid!r} in this exercise; give each an id",
                )
            check_ids.setdefault(cid, j)
    yield from _assertion_problems(lesson)


def _assertion_problems(lesson: Lesson) -> Iterable[tuple[Loc, str]]:
    """The assertion trees of ``assert``/``absent`` checks (docs/assert-checks.md): every
    ``(expr)`` key or value must be a JMESPath expression that compiles and calls known
    functions, every key must be text. Located at the key itself
    (``exercises[0].checks[1].object.spec.(replicas >)``), which a field rule of the check
    type cannot do: it only knows its field."""
    from kubelab.checks.types import Absent, Assert
    from kubelab.k8s import assertion

    for i, exercise in enumerate(lesson.exercises):
        for j, check in enumerate(exercise.checks):
            if isinstance(check, (Assert, Absent)) and check.object is not None:
                for where, message in assertion.problems(check.object):
                    yield ("exercises", i, "checks", j, "object", *where), message


def _deploy_values_problems(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Each ``deploy[i].values`` against its chart's values.schema.json, merged with the
    chart's defaults as Helm does (``kubelab.lessons.chart_values``). It reads the parsed
    document, not the converted lesson, so that its problems come with the shape's."""
    from kubelab.lessons.chart_values import deploy_values_problems

    return deploy_values_problems(data, paths.data_root())


def load_lesson(path: Path) -> LoadedLesson:
    """Load and validate one lesson (its folder or its ``lesson.yaml``).

    The file is parsed once into plain values; only when something is wrong is it composed
    again into nodes, which know their lines, to point every problem at its line.
    """
    file = path / LESSON_FILE if path.is_dir() else path
    shown = display_path(file)
    text = _read_text(file, shown)
    try:
        data = yaml.load(text, Loader=_LessonLoader)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, shown) from None
    except RecursionError:
        raise ValidationFailed(
            f"{shown} is not a lesson", details=[f"{shown}:1: {TOO_DEEP}"]
        ) from None
    _check_document(data, shown)
    try:
        lesson = msgspec.convert(data, Lesson)
    except msgspec.ValidationError:
        found = problems(Lesson, data)  # every problem, not only msgspec's first one
    else:
        found = list(_semantic_problems(lesson, file.parent))
    found += _deploy_values_problems(data)
    if not found:
        return LoadedLesson(lesson, file)
    doc = yaml.compose(text, Loader=_LessonLoader)  # parsed once already: it cannot fail
    located = [Problem(shown, _locate(doc, loc), _dotted(loc), message) for loc, message in found]
    count = f"{len(located)} problem{'s' if len(located) > 1 else ''}"
    raise ValidationFailed(
        f"{shown} is not a valid lesson ({count})",
        details=[str(p) for p in located],
        hint="Fix the lines above; `kubelab validate PATH` checks again.",
    )


def lesson_files(path: Path) -> list[Path]:
    """``lesson.yaml`` files under ``path`` (a file, a lesson folder or a folder of them)."""
    if path.is_file():
        return [path]
    if (path / LESSON_FILE).is_file():
        return [path / LESSON_FILE]
    if path.is_dir():
        return sorted(path.glob(f"*/{LESSON_FILE}"))
    raise UsageError(
        f"{display_path(path)}: no such file or folder",
        hint="Give a lesson.yaml, a lesson folder or a folder of lessons.",
    )


def available_lessons() -> list[LoadedLesson]:
    """Every built-in lesson (invalid ones raise: they are a bug of the project)."""
    return [load_lesson(f) for f in lesson_files(paths.labs_dir())]


def find_lesson(name: str) -> LoadedLesson:
    """A lesson by id, or by path when ``name`` is a folder or file."""
    candidate = Path(name)
    if candidate.exists() and (candidate.is_file() or (candidate / LESSON_FILE).is_file()):
        return load_lesson(candidate)
    folder = paths.labs_dir() / name
    if (folder / LESSON_FILE).is_file():
        return load_lesson(folder)
    known = sorted(p.parent.name for p in paths.labs_dir().glob(f"*/{LESSON_FILE}"))
    close = difflib.get_close_matches(name, known, n=1)
    tip = f"Did you mean {close[0]}? " if close else ""
    raise UsageError(
        f"no lesson {name!r}",
        hint=f"{tip}Known lessons: {', '.join(known) or 'none'} (see `kubelab lessons`).",
    )
