"""A lesson's ``deploy[].values`` checked against its chart's ``values.schema.json``.

Helm validates a release's values when it renders the chart: the chart's ``values.yaml``
coalesced with the values given (mappings merge key by key, anything else replaces, and a
``null`` removes a key the defaults have), against the chart's schema. Left to helm, a
wrong value fails ``kubelab up`` or ``validate --render`` in the schema's terms (``Must
validate "then" as "if" was valid``). This module runs the same validation with jsonschema
when a lesson is loaded, and says each problem in the lesson's terms: where it is under
``deploy[i].values`` (the loader finds the line) and a plain message, one per wrong value.

What kubelab itself adds to the values at ``up`` (:func:`kubelab.lessons.plan.release_values`:
the image registry and pull Secret under the lesson's values, kubelab's labels over them)
is merged the same way, with placeholders for the cluster's registry. A problem is the
lesson's when its values cause it: the problems of the chart's defaults with kubelab's
values alone are the chart's (tests hold the charts' defaults valid) and are not reported.

A schema may put ``"x-kubelab-sum": N`` on an object (the app-backend chart's ``weights``):
the values of its properties must add up to N. JSON Schema cannot add, so the chart spells
the rule out for helm as ``allOf`` if/then clauses, which helm's validator keeps checking
(it ignores the unknown keyword); kubelab checks the sum itself and leaves out the errors of
the clauses under such an object.

A "valid" verdict is kept in kubelab's cache under a digest of the schema, the defaults and
the values: loading a lesson whose values did not change imports no jsonschema.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubelab import cache
from kubelab.base import PATTERN_NAMES, Loc
from kubelab.k8s.data import deep_merge

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

SUM = "x-kubelab-sum"
CACHE_KIND = "chart-values"
# What kubelab adds to a release's values (kubelab.lessons.plan.release_values layers them
# with this module's kubelab_values). PULL_SECRET is images.pipeline.PULL_SECRET (a test
# holds them equal): importing the image pipeline would cost every loaded lesson the
# import of the cluster client.
PLACEHOLDER_REGISTRY = "registry.kubelab.invalid"  # before a cluster (and its Gitea) exists
PULL_SECRET = "kubelab-registry"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubelab"}
LESSON_LABEL = "kubelab.dev/lesson"


def kubelab_values(
    lesson_id: str, registry: str, pull_secrets: list[str] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The values kubelab adds to a lesson's release: (under the lesson's values, over
    them): the image registry and pull Secrets under, kubelab's labels over."""
    image: dict[str, Any] = {"registry": registry}
    if pull_secrets:
        image["pullSecrets"] = pull_secrets
    return {"image": image}, {"commonLabels": {**MANAGED_BY, LESSON_LABEL: lesson_id}}


def injected(lesson_id: str, has_images: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`kubelab_values` as at ``up``, with placeholders for the cluster's registry."""
    return kubelab_values(lesson_id, PLACEHOLDER_REGISTRY, [PULL_SECRET] if has_images else None)


def deploy_values_problems(data: Any, root: Path) -> list[tuple[Loc, str]]:
    """Problems of the deploy values of a lesson document (the parsed YAML), located under
    ``("deploy", i, "values")``. Entries whose shape is wrong, or whose chart is missing or
    outside ``root``, are the other checks' to report and are skipped here."""
    if not isinstance(data, dict) or not isinstance(data.get("deploy"), list):
        return []
    lesson_id = data.get("id") if isinstance(data.get("id"), str) else ""
    under, over = injected(str(lesson_id), bool(data.get("images")))
    found: list[tuple[Loc, str]] = []
    for i, deploy in enumerate(data["deploy"]):
        if not isinstance(deploy, dict):
            continue
        chart, values = deploy.get("chart"), deploy.get("values", {})
        if not isinstance(chart, str) or not chart or not isinstance(values, dict):
            continue
        folder = root / chart
        try:
            if not folder.resolve().is_relative_to(root.resolve()):
                continue
            if not (folder / "Chart.yaml").is_file():
                continue
            schema_text = (folder / "values.schema.json").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # no schema: helm checks nothing either
        try:
            defaults_text = (folder / "values.yaml").read_text(encoding="utf-8")
        except FileNotFoundError:
            defaults_text = ""
        except (OSError, UnicodeDecodeError):
            continue
        for loc, message in chart_values_problems(schema_text, defaults_text, values, under, over):
            found.append((("deploy", i, "values", *loc), message))
    return found


def chart_values_problems(
    schema_text: str,
    defaults_text: str,
    values: dict[str, Any],
    under: dict[str, Any] | None = None,
    over: dict[str, Any] | None = None,
) -> list[tuple[Loc, str]]:
    """Problems of ``values`` (a release's values, as the lesson gives them) for the chart
    whose schema and default values are the texts given, located within ``values``.
    ``under`` and ``over`` are kubelab's own values, merged under and over the lesson's."""
    under, over = under or {}, over or {}
    try:
        key = cache.digest(
            CACHE_KIND,
            cache.files_fingerprint([Path(__file__)]),  # this code, changed in a checkout
            schema_text,
            defaults_text,
            json.dumps([values, under, over], default=repr),
        )
    except (TypeError, ValueError, RecursionError):
        return []  # not plain data (a recursive alias): nothing helm would be given either
    if cache.read(CACHE_KIND, key) is not None:
        return []
    try:
        schema = json.loads(schema_text)
    except ValueError:
        return []  # helm says it: the chart's fault, not the lesson's
    import yaml

    from kubelab.yamlio import LOADER

    try:
        defaults = yaml.load(defaults_text, Loader=LOADER) or {}
    except yaml.YAMLError:
        return []
    if not isinstance(schema, dict) or not isinstance(defaults, dict):
        return []
    try:
        found = _problems(schema_text, schema, defaults, values, under, over)
    except RecursionError:
        return []
    if not found:
        cache.write(CACHE_KIND, key, "")
    return found


# -- Helm's merge ------------------------------------------------------------------------------


def coalesce(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``values`` over the chart's ``defaults`` as Helm 3 coalesces them: mappings merge
    recursively, any other value replaces, a null removes a key the defaults have (a null
    for a key they do not have stays, and fails the schema as helm's does)."""
    out = dict(values)
    for key, default in defaults.items():
        if key not in values:
            out[key] = default
        elif values[key] is None:
            del out[key]
        elif isinstance(values[key], dict) and isinstance(default, dict):
            out[key] = coalesce(values[key], default)
    return out


def _as_json(value: Any) -> Any:
    """The value as helm sees it after the YAML it is given: keys are strings."""
    if isinstance(value, dict):
        return {_key(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    return value


def _key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


# -- validation --------------------------------------------------------------------------------


def _sum_rule(
    validator: Validator, total: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """``x-kubelab-sum``: the object's properties add up to ``total``. Said only once every
    one of them is there and valid on its own (else their own problem is the one to fix)."""
    from jsonschema.exceptions import ValidationError

    properties = schema.get("properties", {})
    if not validator.is_type(instance, "object") or not properties:
        return
    parts = [(name, instance.get(name)) for name in properties]
    for name, value in parts:
        if not validator.is_type(value, "number"):
            return
        if not validator.evolve(schema=properties[name]).is_valid(value):
            return
    got = sum(value for _, value in parts)
    if got != total:
        terms = " + ".join(f"{name} {_number(value)}" for name, value in parts)
        yield ValidationError(f"must add up to {_number(total)} ({terms} = {_number(got)})")


@functools.lru_cache(maxsize=16)
def _validator(schema_text: str) -> Validator:
    """A validator of the schema's own draft (``$schema``; draft 7 as helm when none), with
    ``x-kubelab-sum`` added."""
    from jsonschema import validators

    schema = json.loads(schema_text)
    base = validators.validator_for(schema, default=validators.Draft7Validator)
    cls = validators.extend(base, {SUM: _sum_rule})  # type: ignore[no-untyped-call]
    validator: Validator = cls(schema)
    return validator


def _problems(
    schema_text: str,
    schema: dict[str, Any],
    defaults: dict[str, Any],
    values: dict[str, Any],
    under: dict[str, Any],
    over: dict[str, Any],
) -> list[tuple[Loc, str]]:
    validator = _validator(schema_text)
    baseline = _as_json(coalesce(deep_merge(under, over), defaults))
    doc = _as_json(coalesce(deep_merge(deep_merge(under, values), over), defaults))
    chart_own = {_signature(e) for e in validator.iter_errors(baseline)}
    errors = [
        e
        for e in validator.iter_errors(doc)
        if not _under_sum(e, schema) and _signature(e) not in chart_own
    ]
    by_loc: dict[Loc, list[ValidationError]] = {}
    said: dict[Loc, str] = {}
    for error in errors:
        path: Loc = tuple(error.absolute_path)
        required: Any = error.validator_value
        if error.validator == "required":
            for name in required:
                if isinstance(error.instance, dict) and name not in error.instance:
                    nulled = _lesson_value(values, (*path, name)) is None
                    why = " (a null removes the chart's default)" if nulled else ""
                    said.setdefault((*path, name), f"missing required key {name!r}{why}")
        elif error.validator == "additionalProperties" and error.validator_value is False:
            for name, message in _unknown_keys(error):
                said.setdefault((*path, name), message)
        elif "propertyNames" in error.relative_schema_path:
            name = str(error.instance)
            said.setdefault((*path, name), f"key {name!r}: {_what(error, shown=False)}")
        else:
            by_loc.setdefault(path, []).append(error)
    for loc, group in by_loc.items():
        said.setdefault(loc, _best_message(group, schema))
    return sorted(said.items(), key=lambda item: _order(values, item[0]))


def _signature(error: ValidationError) -> tuple[Any, ...]:
    return (
        tuple(error.absolute_path),
        tuple(error.absolute_schema_path),
        json.dumps(error.instance, sort_keys=True, default=repr),
    )


def _under_sum(error: ValidationError, schema: dict[str, Any]) -> bool:
    """Whether ``error`` comes from the ``allOf`` clauses of an object carrying
    ``x-kubelab-sum`` (helm's spelled-out sum, which kubelab says in one line)."""
    node: Any = schema
    for part in error.absolute_schema_path:
        if isinstance(node, dict) and SUM in node and part == "allOf":
            return True
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return False


# -- messages ----------------------------------------------------------------------------------

_NOUNS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
_QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# What a value matching the charts' common patterns looks like (others are named by the
# schema's description and the pattern itself).
_SHAPES = {
    _QUANTITY: "must be a quantity such as 100m, 64Mi or 1",
    r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$": "must be an image tag: letters, digits, '_', '.' "
    "and '-', not starting with '.' or '-', at most 128 characters",
    r"^[0-9]+(ms|s|m|h)$": "must be a duration such as 500ms, 15s, 5m or 1h",
    r"^[1-9][0-9]*(s|m)$": "must be a duration in seconds or minutes such as 30s or 1m",
    r"^[0-9]+(\.[0-9]+)?$": "must be a number of seconds such as 1 or 0.25",
    r"^/": "must start with /",
    r"^https?://[^\s]+$": "must be an http:// or https:// URL",
    r"^[^/\s]*$": "must be a host[:port], without '/' or spaces",
    r"^[a-z0-9][a-z0-9._/-]*$": "must be an image repository such as kubelab/app-backend "
    "(lowercase)",
    r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$": "must be a lowercase name: letters, digits and '-', "
    "starting with a letter and ending with a letter or digit (or empty)",
    r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$": "must be a label value: letters, "
    "digits, '-', '_' and '.', starting and ending with a letter or digit (or empty)",
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$": "must be a label key such as app or "
    "example.org/tier",
}


def _shown(value: Any) -> str:
    """A value as the author would write it (JSON: strings quoted), shortened."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else _shown(value)


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _best_message(group: list[ValidationError], schema: dict[str, Any]) -> str:
    """One message for the errors of one value: the most telling one."""
    from jsonschema.exceptions import best_match

    for error in group:
        if error.validator in ("anyOf", "oneOf") and error.context:
            branches = [e for e in error.context if len(e.relative_schema_path) == 2]
            if branches and all(e.validator == "type" for e in branches):
                nouns = [
                    _NOUNS.get(str(e.validator_value), str(e.validator_value)) for e in branches
                ]
                return f"must be {' or '.join(nouns)} (got {_shown(error.instance)})"
    best = best_match(group)
    return _message(best, schema) if best is not None else "is not valid"


def _message(error: ValidationError, schema: dict[str, Any]) -> str:
    text = _what(error)
    condition = _condition(error, schema)
    return f"{text} when {condition}" if condition else text


def _what(error: ValidationError, shown: bool = True) -> str:
    """The error in plain words; ``shown``: with the wrong value."""
    kind: Any = error.validator
    want: Any = error.validator_value
    value: Any = error.instance
    schema: dict[str, Any] = dict(error.schema) if isinstance(error.schema, Mapping) else {}
    got = f" (got {_shown(value)})" if shown else ""
    if kind == "type":
        wanted = want if isinstance(want, list) else [want]
        return f"must be {' or '.join(_NOUNS.get(str(w), str(w)) for w in wanted)}{got}"
    if kind == "enum":
        if len(want) == 1:
            return f"must be {_plain(want[0])}{got}"
        return f"must be one of: {', '.join(_plain(v) for v in want)}{got}"
    if kind == "const":
        return f"must be {_plain(want)}{got}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return _range(schema) + got
    if kind == "multipleOf":
        return f"must be a multiple of {_number(want)}{got}"
    if kind == "minLength":
        return "must not be empty" if want == 1 else f"must be at least {want} characters{got}"
    if kind == "maxLength":
        return f"must be at most {want} characters (got {len(value)})"
    if kind == "pattern":
        shape = PATTERN_NAMES.get(want) or _SHAPES.get(want)
        if shape is None:
            about = schema.get("description")
            shape = f"must match {want}" + (f" ({about})" if about else "")
        return f"{shape}{got}"
    if kind == "minItems":
        return (
            "must list at least one item"
            if want == 1
            else f"must list at least {want} items (got {len(value)})"
        )
    if kind == "maxItems":
        return f"must list at most {want} items (got {len(value)})"
    if kind == "uniqueItems":
        return "must not list an item twice"
    if kind == "minProperties":
        return "must have at least one entry" if want == 1 else f"must have at least {want} entries"
    if kind == "maxProperties":
        return f"must have at most {want} entries (got {len(value)})"
    if kind == "format":
        return f"must be a valid {want}{got}"
    if kind == "not":
        return f"is not allowed here{got}"
    return error.message


def _range(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    # draft 6 and later: exclusive bounds are numbers of their own (draft 4's booleans are
    # no bound; no chart of the project uses them)
    low_x, high_x = (
        None if isinstance(bound, bool) else bound
        for bound in (schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum"))
    )
    if low is not None and high is not None:
        return f"must be between {_number(low)} and {_number(high)}"
    parts = []
    if low is not None:
        parts.append(f"at least {_number(low)}")
    if low_x is not None:
        parts.append(f"more than {_number(low_x)}")
    if high is not None:
        parts.append(f"at most {_number(high)}")
    if high_x is not None:
        parts.append(f"less than {_number(high_x)}")
    return f"must be {' and '.join(parts)}"


def _condition(error: ValidationError, schema: dict[str, Any]) -> str:
    """For an error of a ``then`` (``else``): its ``if`` as words (``enabled is true``)."""
    node: Any = schema
    holder: Any = None
    negated = False
    for part in error.absolute_schema_path:
        if part in ("then", "else") and isinstance(node, dict) and "if" in node:
            holder, negated = node, part == "else"
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return ""
    condition = holder.get("if") if isinstance(holder, dict) else None
    if not isinstance(condition, dict):
        return ""
    words = [
        f"{name} is {_shown(rule['const'])}"
        for name, rule in condition.get("properties", {}).items()
        if isinstance(rule, dict) and "const" in rule
    ]
    text = " and ".join(words)
    return f"not {text}" if negated and text else text


def _unknown_keys(error: ValidationError) -> Iterator[tuple[str, str]]:
    import re

    schema: Any = error.schema
    instance: Any = error.instance
    allowed = list(schema.get("properties", {}))
    patterns = list(schema.get("patternProperties", {}))
    for key in instance:
        if key in allowed or any(re.search(p, key) for p in patterns):
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1)
        tip = f"; did you mean {close[0]!r}?" if close else ""
        listed = f" (allowed: {', '.join(allowed)})" if allowed else ""
        yield str(key), f"unknown key {key!r}{tip}{listed}"


# -- where in the lesson -----------------------------------------------------------------------


_MISSING = object()


def _lesson_value(values: Any, loc: Loc) -> Any:
    """The value at ``loc`` in the lesson's values, or ``_MISSING``."""
    node = values
    for part in loc:
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, dict):
            node = node.get(part, _MISSING)
        else:
            return _MISSING
    return node


def _order(values: Any, loc: Loc) -> tuple[int, ...]:
    """Where ``loc`` comes in the lesson's values (keys in their order; those it does not
    have after those it does)."""
    out: list[int] = []
    node = values
    for part in loc:
        if isinstance(node, dict):
            keys = [_key(k) for k in node]
            if part not in keys:
                out.append(len(keys))
                break
            out.append(keys.index(str(part)))
            node = list(node.values())[keys.index(str(part))]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        else:
            break
    return tuple(out)
