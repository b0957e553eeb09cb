"""Assertion trees: does a Kubernetes object match a partial object? (``assert`` checks)

The model is Kyverno Chainsaw's ``assert`` operation (its kyverno-json assertion trees),
with one deliberate difference for lists. A *tree* is YAML written like the object, with
only the fields that matter:

* a **mapping** matches when every key it gives matches; fields the tree does not name are
  ignored. An empty mapping ``{}`` matches any value that is present and not null;
* a **list** matches a live list when *each* of its elements matches *some* element of the
  live list, in any order (one live element may serve several). Chainsaw compares lists
  index by index and wants the same length; kubelab does not, because lessons check "the
  steps include a pause" or "env has BUG_AFTER=50" whatever else the list holds. An empty
  list ``[]`` matches only an empty list;
* a **scalar** equals the live value, strictly: numbers compare as numbers (``1`` equals
  ``1.0``), otherwise the types must be the same (``"1"`` is not ``1``, ``true`` is not
  ``1``, ``null`` only matches null), as in Chainsaw;
* a key written ``(expr)`` is a JMESPath expression evaluated on the current live node; its
  result is matched against the key's value (``(length(spec.http)): 2``,
  ``(spec.replicas > `3`): true``). A key ``~.(expr)`` or ``~.field`` iterates: the value
  must then match *every* element of the projected list (or every value of a mapping);
* a scalar value written ``(expr)`` is evaluated on the live value at that place and the
  live value must equal the result (Chainsaw's expressions on the right-hand side);
* a key or value written ``\\(text)\\`` is the literal ``(text)``, not an expression;
* a field the tree names that the live object lacks is a difference ("is missing"), even
  when the tree says ``null`` (write ``(field): null`` for "unset or null").

:func:`match` returns the differences (empty: it matches), each with its path in the live
object; :func:`problems` is what the lesson loader reports for a tree (an expression that
does not compile, a key that is not text). Everything here is pure: no cluster, no text
for students (:mod:`kubelab.checks.assertions` words the differences).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from kubelab.k8s.data import json_equal

if TYPE_CHECKING:
    from jmespath.parser import ParsedResult


class Expr(str):
    """A path part that is an expression key (``(length(spec.http))``), not a field."""

    __slots__ = ()


PathPart = str | int
Path = tuple[PathPart, ...]

_FOREACH = re.compile(r"^~(?P<name>\w+)?\.(?P<rest>.*)$", re.DOTALL)
_ESCAPED = re.compile(r"^\\(?P<text>.+)\\$", re.DOTALL)
_EXPRESSION = re.compile(r"^\((?P<expr>.*)\)$", re.DOTALL)


@dataclass(frozen=True)
class Key:
    """One key of a tree's mapping, parsed."""

    raw: str
    field: str | None = None  # a plain (or escaped) field name
    expression: str | None = None  # the JMESPath of a ``(expr)`` key
    foreach: bool = False  # ``~.``: every element of the projection must match
    foreach_name: str | None = None  # ``~name.``: not supported (no bindings)

    @property
    def part(self) -> PathPart:
        """How the key shows in a path."""
        if self.expression is not None:
            return Expr(f"({self.expression})")
        return str(self.field)


def parse_key(raw: str) -> Key:
    """``raw`` as a plain field, an escaped field, an expression and/or an iteration."""
    foreach, name, rest = False, None, raw
    if m := _FOREACH.match(raw):
        foreach, name, rest = True, m["name"], m["rest"]
    if m := _ESCAPED.match(rest):
        return Key(raw, field=m["text"], foreach=foreach, foreach_name=name)
    if m := _EXPRESSION.match(rest):
        return Key(raw, expression=m["expr"], foreach=foreach, foreach_name=name)
    return Key(raw, field=rest, foreach=foreach, foreach_name=name)


def leaf_expression(value: str) -> str | None:
    """The expression of a scalar written ``(expr)``, else None."""
    if _ESCAPED.match(value):
        return None
    m = _EXPRESSION.match(value)
    return m["expr"] if m else None


def leaf_value(value: Any) -> Any:
    """A scalar of the tree as the value it stands for (``\\(x)\\`` is ``(x)``)."""
    if isinstance(value, str) and (m := _ESCAPED.match(value)):
        return m["text"]
    return value


# -- expressions ----------------------------------------------------------------------------


# jmespath is imported when an expression is first used: most lessons have none, and
# loading a lesson is part of every command's start-up.


@functools.lru_cache(maxsize=512)
def compiled(expression: str) -> ParsedResult:
    """The parsed expression (raises jmespath's errors)."""
    import jmespath

    return jmespath.compile(expression)


def evaluate(expression: str, value: Any) -> Any:
    """``expression`` on ``value``; raises :class:`EvaluationError` with a reason."""
    from jmespath import exceptions as jp_errors

    try:
        return compiled(expression).search(value)
    except jp_errors.JMESPathError as exc:
        raise EvaluationError(_jmespath_reason(exc)) from exc
    except (TypeError, ValueError, AttributeError) as exc:
        # jmespath 1.1 lets some comparisons of mixed types through as TypeError.
        raise EvaluationError(str(exc)) from exc


class EvaluationError(Exception):
    """An expression that compiled but cannot run on this value."""


def _jmespath_reason(exc: Exception) -> str:
    """jmespath's multi-line message as one short line."""
    from jmespath import exceptions as jp_errors

    if isinstance(exc, jp_errors.IncompleteExpressionError):
        return "the expression ends too early"
    if isinstance(exc, jp_errors.LexerError):
        return f"{exc.message} at column {exc.lexer_position}"
    if isinstance(exc, jp_errors.ArityError):
        return str(exc)
    if isinstance(exc, jp_errors.ParseError):
        token = exc.token_value
        if exc.token_type == "EOF":
            return "the expression ends too early"
        return f"unexpected {token!r} at column {exc.lex_position}"
    if isinstance(exc, jp_errors.EmptyExpressionError):
        return "the expression is empty"
    return " ".join(str(exc).split())


def _function_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            yield node
        for child in node.get("children") or []:
            yield from _function_nodes(child)
    elif isinstance(node, list):
        for child in node:
            yield from _function_nodes(child)


def expression_problem(expression: str) -> str | None:
    """Why ``expression`` is not a JMESPath expression that can run, or None.

    Beyond the grammar, the functions it calls must exist and get the number of arguments
    they take (jmespath itself only finds those out when the expression runs)."""
    from jmespath import exceptions as jp_errors
    from jmespath import functions as jp_functions

    try:
        parsed = compiled(expression)
    except jp_errors.JMESPathError as exc:
        return f"invalid JMESPath expression: {_jmespath_reason(exc)}"
    table = cast(dict[str, Any], jp_functions.Functions.FUNCTION_TABLE)
    for node in _function_nodes(cast(Any, parsed.parsed)):
        name, count = str(node.get("value")), len(node.get("children") or [])
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=1)
            tip = f"; did you mean {close[0]}()?" if close else ""
            return f"invalid JMESPath expression: unknown function {name}(){tip}"
        signature = table[name].get("signature") or []
        variadic = bool(signature) and bool(signature[-1].get("variadic"))
        wanted = len(signature)
        if (variadic and count < wanted) or (not variadic and count != wanted):
            least = "at least " if variadic else ""
            plural = "" if wanted == 1 else "s"
            return (
                f"invalid JMESPath expression: {name}() takes {least}{wanted} "
                f"argument{plural}, got {count}"
            )
    return None


# -- load-time problems ---------------------------------------------------------------------


Loc = tuple[str | int, ...]


def problems(tree: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str]]:
    """What is wrong with ``tree`` as an assertion tree, as (location in the tree, message)
    pairs; the location's parts are the tree's own keys and list indexes."""
    if isinstance(tree, dict):
        for raw, sub in tree.items():
            where = (*loc, str(raw))
            if not isinstance(raw, str):
                yield where, f"a key of an object tree must be text (got {raw!r}); quote it"
            else:
                key = parse_key(raw)
                if key.foreach_name is not None:
                    name = key.foreach_name
                    yield (
                        where,
                        f"named iteration ~{name}. is not supported (no bindings): write ~.",
                    )
                if key.expression is not None:
                    problem = expression_problem(key.expression)
                    if problem:
                        yield where, problem
                elif key.foreach and not key.field:
                    yield where, "~. needs a field or an (expression) after it"
            yield from problems(sub, where)
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            yield from problems(item, (*loc, i))
    elif isinstance(tree, str):
        expression = leaf_expression(tree)
        if expression is not None:
            problem = expression_problem(expression)
            if problem:
                yield loc, problem


# -- matching -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One way the live object differs from the tree, at ``path`` of the live object.

    ``kind`` says which (the check words it): ``missing`` (``expected`` is the tree's
    scalar, or ``NOTHING`` for a subtree), ``mismatch`` (``value`` is not ``expected``),
    ``type`` (``value`` is not a ``wanted``: mapping, list, value, iterable),
    ``not-empty`` (``value`` is a list the tree wants empty), ``no-element`` (no element of
    the live list ``value`` matches the tree element ``expected``; ``closest`` is the index
    of the nearest one and ``inner`` its differences), ``error`` (``expression`` cannot be
    evaluated: ``reason``).
    """

    path: Path
    kind: str
    value: Any = None
    expected: Any = None
    wanted: str = ""
    closest: int | None = None
    inner: tuple[Difference, ...] = ()
    expression: str = ""
    reason: str = ""


NOTHING: Any = object()  # "no scalar was expected here" (a subtree was)


def match(live: Any, tree: Any) -> list[Difference]:
    """Every difference between ``live`` and ``tree``; empty when it matches."""
    return list(_match(live, tree, ()))


def matches(live: Any, tree: Any) -> bool:
    return not any(True for _ in _match(live, tree, ()))


def _match(live: Any, tree: Any, path: Path) -> Iterator[Difference]:
    if isinstance(tree, dict):
        yield from _match_mapping(live, tree, path)
    elif isinstance(tree, list):
        yield from _match_list(live, tree, path)
    else:
        yield from _match_scalar(live, tree, path)


def _match_mapping(live: Any, tree: dict[Any, Any], path: Path) -> Iterator[Difference]:
    if not tree:
        if live is None:
            yield Difference(path, "type", value=live, wanted="value")
        return
    keys = [parse_key(str(raw)) for raw in tree]
    if any(k.field is not None for k in keys) and not isinstance(live, dict):
        yield Difference(path, "type", value=live, wanted="mapping")
        return
    for key, sub in zip(keys, tree.values(), strict=True):
        child = (*path, key.part)
        if key.expression is not None:
            try:
                projected = evaluate(key.expression, live)
            except EvaluationError as exc:
                yield Difference(child, "error", expression=key.expression, reason=str(exc))
                continue
        else:
            assert isinstance(live, dict)
            if key.field not in live:
                expected = NOTHING if isinstance(sub, (dict, list)) else leaf_value(sub)
                if isinstance(expected, str) and leaf_expression(expected) is not None:
                    expected = NOTHING
                yield Difference(child, "missing", expected=expected)
                continue
            projected = live[key.field]
        if key.foreach:
            yield from _each(projected, sub, child)
        else:
            yield from _match(projected, sub, child)


def _each(projected: Any, sub: Any, path: Path) -> Iterator[Difference]:
    if isinstance(projected, list):
        for i, item in enumerate(projected):
            yield from _match(item, sub, (*path, i))
    elif isinstance(projected, dict):
        for name, item in projected.items():
            yield from _match(item, sub, (*path, str(name)))
    else:
        yield Difference(path, "type", value=projected, wanted="iterable")


# How far a difference puts a live element from a tree element, to find the closest: a
# field of another value is nearer than a field the element lacks or of another type.
_WEIGHTS = {"missing": 2, "type": 2}


def _match_list(live: Any, tree: list[Any], path: Path) -> Iterator[Difference]:
    if not isinstance(live, list):
        yield Difference(path, "type", value=live, wanted="list")
        return
    if not tree:
        if live:
            yield Difference(path, "not-empty", value=live)
        return
    for element in tree:
        best: tuple[int, int, list[Difference]] | None = None
        for j, item in enumerate(live):
            found = list(_match(item, element, (*path, j)))
            if not found:
                break
            score = sum(_WEIGHTS.get(d.kind, 1) for d in found)
            if best is None or score < best[0]:
                best = (score, j, found)
        else:
            closest, inner = (best[1], tuple(best[2])) if best else (None, ())
            yield Difference(
                path, "no-element", value=live, expected=element, closest=closest, inner=inner
            )


def _match_scalar(live: Any, tree: Any, path: Path) -> Iterator[Difference]:
    expected = leaf_value(tree)
    if isinstance(tree, str) and (expression := leaf_expression(tree)) is not None:
        try:
            expected = evaluate(expression, live)
        except EvaluationError as exc:
            yield Difference(path, "error", expression=expression, reason=str(exc))
            return
    if not json_equal(live, expected):  # Chainsaw's equality: numbers as numbers, else same type
        yield Difference(path, "mismatch", value=live, expected=expected)


def covered(live: Any, tree: Any) -> Any:
    """The part of ``live`` that ``tree`` looks at (what an ``absent`` check found): the
    fields the tree names, the live elements its list elements matched, an expression
    key with its result."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for raw, sub in tree.items():
            key = parse_key(str(raw))
            if key.expression is not None:
                try:
                    out[raw] = covered(evaluate(key.expression, live), sub)
                except EvaluationError:
                    continue
            elif isinstance(live, dict) and key.field in live:
                out[str(key.field)] = covered(live[key.field], sub)
        return out
    if isinstance(tree, list) and tree and isinstance(live, list):
        picked: list[tuple[int, Any]] = []  # (index of the live element, tree element)
        for element in tree:
            index = next((j for j, item in enumerate(live) if matches(item, element)), None)
            if index is not None and all(index != j for j, _ in picked):
                picked.append((index, element))
        return [covered(live[j], element) for j, element in sorted(picked, key=lambda p: p[0])]
    return live


# -- showing values and paths ---------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@-]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}
_PLAIN_FIELD = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")


def flow(value: Any, limit: int = 120) -> str:
    """``value`` in YAML's flow style, cut at ``limit`` characters: ``{setWeight: 40}``."""
    text = _flow(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow_key(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str):
        plain = _PLAIN.match(value) and value.lower() not in _YAML_WORDS
        return value if plain else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def _flow_key(key: Any) -> str:
    text = str(key)
    if isinstance(key, str) and (_PLAIN.match(text) or _EXPRESSION.match(text)):
        return text
    return json.dumps(text, ensure_ascii=False)


def path_text(path: Path) -> str:
    """``spec.http[0].route``, ``metadata.labels["app.kubernetes.io/name"]``,
    ``spec.(length(http))``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, Expr) or _PLAIN_FIELD.match(part):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def relative(path: Path, base: Path) -> Path:
    """``path`` below ``base`` (the part after it)."""
    return path[len(base) :] if path[: len(base)] == base else path


def label(path: Path) -> str:
    """The last element of ``path`` as it reads in "closest steps[1]": the list's field
    name and the index (``path`` ends with an index)."""
    text = path_text(path)
    if not path or not isinstance(path[-1], int):
        return text
    head = path[:-1]
    name = path_text(head[-1:]) if head and not isinstance(head[-1], int) else ""
    return f"{name}[{path[-1]}]"
