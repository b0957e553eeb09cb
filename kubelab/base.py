"""Base structs shared by everything read from a lesson file, and their validation.

The lesson format is declared as msgspec structs (``kubelab.lessons.model``,
``kubelab.checks.types``), and so is the state file (``kubelab.state``). msgspec replaced
pydantic for start-up: with pydantic, importing it and building these models took about
220 ms of every command that reads a lesson, more than the rest of ``kubelab up
--dry-run``; the msgspec structs and their import take about 20 ms (docs/benchmarks.md).
Both declare the same things: types, constraints (``Meta``), tagged unions.

``StrictModel`` makes unknown keys errors (a typo must not pass silently);
``LocalizedText`` is a text given in both languages of the course.

msgspec stops at the first error, but a lesson author wants every problem of a file at
once: :func:`problems` walks a document against a struct type and reports each problem
with its location (``("exercises", 0, "checks", 1, "min_ready")``) in plain words.
Loading converts with msgspec directly and calls :func:`problems` only when that fails.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Union

import msgspec

from kubelab.i18n import LANGS, Lang

Loc = tuple[str | int, ...]


class StrictModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every struct read from a lesson file: unknown keys are errors.

    msgspec's ``kw_only`` covers only the fields of the class that sets it, so every
    subclass sets it again (it may then add required fields after its base's optional
    ones), and ``frozen`` too, which type checkers do not see inherited.
    """

    # Rules msgspec's types cannot say: field name -> function raising ValueError for a
    # bad value (a label selector that does not parse, weights that do not sum to 100).
    field_rules: ClassVar[dict[str, Callable[[Any], object]]] = {}

    def __post_init__(self) -> None:
        for name, rule in self.field_rules.items():
            rule(getattr(self, name))


def _missing_languages(value: dict[Any, Any]) -> list[str]:
    return [lang for lang in LANGS if not str(value.get(lang) or "").strip()]


def _missing_message(missing: list[str]) -> str:
    return f"missing translation: {', '.join(missing)} (every text needs pt and en)"


class LocalizedText(StrictModel, frozen=True, kw_only=True):
    """A text in Brazilian Portuguese and English (both required, neither empty)."""

    pt: str
    en: str

    def __post_init__(self) -> None:
        missing = _missing_languages({"pt": self.pt, "en": self.en})
        if missing:
            raise ValueError(_missing_message(missing))

    @classmethod
    def raw_problem(cls, value: Any) -> str | None:
        """What is wrong with ``value`` as a whole, said better than field by field."""
        if isinstance(value, str):
            return "expected a text per language: {pt: ..., en: ...}"
        if isinstance(value, dict):
            missing = _missing_languages(value)
            return _missing_message(missing) if missing else None
        return None

    def get(self, lang: Lang) -> str:
        return self.pt if lang == "pt" else self.en


# -- every problem of a document ------------------------------------------------------------

# Names of patterns used all over the lesson format (set by kubelab.checks.types).
PATTERN_NAMES: dict[str, str] = {}

_NOUNS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing",
}
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_TYPE = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_BOUND = re.compile(r"^Expected `(?:int|float)` (?P<op>>=|<=|>|<) (?P<n>\S+)$")
_REGEX = re.compile(r"^Expected `str` matching regex '(?P<rx>.*)'$")
_LENGTH = re.compile(r"^Expected `(?P<what>\w+)` of length (?P<op>>=|<=) (?P<n>\d+)$")
_OPS = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}


def problems(tp: Any, value: Any, loc: Loc = ()) -> list[tuple[Loc, str]]:
    """Every problem of ``value`` as a ``tp`` (a struct type or any type msgspec knows),
    as (location, message) pairs; empty when ``msgspec.convert(value, tp)`` succeeds."""
    found: list[tuple[Loc, str]] = []
    _walk(tp, value, loc, found)
    return found


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _walk(tp: Any, value: Any, loc: Loc, found: list[tuple[Loc, str]]) -> bool:
    inner, constrained = tp, False
    if typing.get_origin(tp) is typing.Annotated:
        inner, constrained = typing.get_args(tp)[0], True
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if _is_struct(inner):
        ok = _walk_struct(inner, value, loc, found)
    elif origin in (Union, types.UnionType) and any(_is_struct(a) for a in args):
        if value is None and type(None) in args:
            return True
        structs = [a for a in args if _is_struct(a)]
        if len(structs) == 1:
            ok = _walk_struct(structs[0], value, loc, found)
        else:
            ok = _walk_tagged(structs, value, loc, found)
    elif origin is list and isinstance(value, list):
        ok = all([_walk(args[0], item, (*loc, i), found) for i, item in enumerate(value)])
    elif origin is dict and isinstance(value, dict):
        ok = all(
            [
                _convert(args[0], key, (*loc, str(key)), found)
                and _walk(args[1], item, (*loc, str(key)), found)
                for key, item in value.items()
            ]
        )
    else:
        return _convert(tp, value, loc, found)
    return _convert(tp, value, loc, found) if ok and constrained else ok


def _walk_tagged(
    structs: list[type[msgspec.Struct]], value: Any, loc: Loc, found: list[tuple[Loc, str]]
) -> bool:
    """A union of tagged structs, chosen by their tag field (a check's ``type:``)."""
    tag_field = str(structs[0].__struct_config__.tag_field)
    by_tag = {str(s.__struct_config__.tag): s for s in structs}
    if not isinstance(value, dict):
        found.append((loc, f"expected a mapping (got {value!r})"))
        return False
    tag = value.get(tag_field)
    if tag is None:
        found.append((loc, f"missing {tag_field!r} (one of: {', '.join(by_tag)})"))
        return False
    if tag not in by_tag:
        close = difflib.get_close_matches(str(tag), list(by_tag), n=1)
        tip = f"; did you mean {close[0]!r}?" if close else ""
        found.append((loc, f"unknown check type {tag!r}{tip} (known types: {', '.join(by_tag)})"))
        return False
    return _walk_struct(by_tag[tag], value, loc, found)


def _walk_struct(
    cls: type[msgspec.Struct], value: Any, loc: Loc, found: list[tuple[Loc, str]]
) -> bool:
    raw_problem = getattr(cls, "raw_problem", None)
    said = raw_problem(value) if raw_problem else None
    if said:
        found.append((loc, said))
        return False
    if not isinstance(value, dict):
        found.append((loc, f"expected a mapping (got {value!r})"))
        return False
    fields = msgspec.structs.fields(cls)
    names = [f.encode_name for f in fields]
    tag_field = cls.__struct_config__.tag_field
    known = set(names) | ({tag_field} if tag_field else set())
    ok, typos = True, set()
    for key in value:
        if key in known:
            continue
        ok = False
        close = difflib.get_close_matches(str(key), names, n=1)
        typos.update(close)
        tip = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(names)})"
        found.append(((*loc, str(key)), f"unknown key {key!r}{tip}"))
    rules = getattr(cls, "field_rules", {})
    for field in fields:
        if field.encode_name in value:
            where = (*loc, field.encode_name)
            ok = _walk(field.type, value[field.encode_name], where, found) and ok
            if field.name in rules and not _obeys(rules[field.name], field, value, where, found):
                ok = False
        elif field.required:
            ok = False
            if field.encode_name not in typos:  # "did you mean 'title'?" already said it
                found.append(((*loc, field.encode_name), "required field is missing"))
    # The struct's own rules (__post_init__), once its fields are right.
    return _convert(cls, value, loc, found) if ok else False


def _obeys(
    rule: Callable[[Any], object],
    field: msgspec.structs.FieldInfo,
    value: dict[str, Any],
    where: Loc,
    found: list[tuple[Loc, str]],
) -> bool:
    try:
        rule(msgspec.convert(value[field.encode_name], field.type))
    except msgspec.ValidationError:
        return False  # its type is wrong: said already
    except ValueError as exc:
        found.append((where, str(exc)))
        return False
    return True


def _convert(tp: Any, value: Any, loc: Loc, found: list[tuple[Loc, str]]) -> bool:
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError as exc:
        found.append(_plain_words(str(exc), tp, value, loc))
        return False
    return True


def _plain_words(text: str, tp: Any, value: Any, loc: Loc) -> tuple[Loc, str]:
    """msgspec's message (``Expected `int` >= 1 - at `$.n```) said for a lesson author."""
    at = _AT.search(text)
    if at:
        text = text[: at.start()]
        for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", at.group("path")):
            loc = (*loc, key or int(index))
            value = _MISSING  # the value deeper down is not at hand: say no "got"
    got = "" if value is _MISSING else f" (got {value!r})"
    if m := _TYPE.match(text):
        wanted = " or ".join(_NOUNS.get(w, w) for w in m["want"].split(" | "))
        return loc, f"expected {wanted}{got}"
    if m := _BOUND.match(text):
        return loc, f"must be {_OPS[m['op']]} {m['n']}{got}"
    if m := _REGEX.match(text):
        rx = m["rx"]
        return loc, f"{PATTERN_NAMES.get(rx) or f'must match {rx}'}{got}"
    if m := _LENGTH.match(text):
        n, most = int(m["n"]), m["op"] == "<="
        unit = {"array": "item", "object": "entry", "str": "character"}.get(m["what"], "item")
        plural = unit if n == 1 else ("entries" if unit == "entry" else f"{unit}s")
        return loc, f"needs {'at most' if most else 'at least'} {n} {plural}{got}"
    if text.startswith("Invalid enum value"):
        allowed = _literal_values(tp)
        return loc, f"must be one of: {', '.join(map(str, allowed))}{got}" if allowed else text
    return loc, text


_MISSING = object()


def _literal_values(tp: Any) -> list[Any]:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [v for arg in typing.get_args(tp) for v in _literal_values(arg)]
    return []
