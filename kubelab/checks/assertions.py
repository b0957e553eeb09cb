"""Declarative checks on objects: assert, absent (docs/assert-checks.md).

The matching is :mod:`kubelab.k8s.assertion` (pure); this module reads the objects from the
cluster and words the differences for the student: paths in the live object, at most
:data:`SHOWN` differences of the closest candidate, then how many more.
"""

from __future__ import annotations

from typing import Any

from kubelab.checks import types
from kubelab.checks.objects import object_ref
from kubelab.checks.registry import CheckContext, implements
from kubelab.checks.result import CheckResult, Status
from kubelab.i18n import _
from kubelab.k8s import assertion, selectors
from kubelab.k8s.assertion import Difference, flow, path_text

#: Differences a message shows; the rest are counted ("and 3 more").
SHOWN = 5
#: Differences of the closest list element shown inside a "no element matches".
SHOWN_INNER = 3


# -- words ----------------------------------------------------------------------------------


def _noun(value: Any) -> str:
    """What ``value`` is, for "spec.http is a list, expected a mapping"."""
    if isinstance(value, dict):
        return _("a mapping")
    if isinstance(value, list):
        return _("a list")
    if isinstance(value, bool):
        return _("a boolean")
    if isinstance(value, (int, float)):
        return _("a number")
    if isinstance(value, str):
        return _("a string")
    return _("null")


def _wanted(kind: str) -> str:
    return {
        "mapping": _("a mapping"),
        "list": _("a list"),
        "value": _("a value (not null)"),
        "iterable": _("a list or a mapping to go through"),
    }.get(kind, kind)


def _path(path: assertion.Path) -> str:
    return path_text(path) or _("the object")


def describe(diff: Difference, base: assertion.Path = ()) -> str:
    """One difference in words, its path relative to ``base``."""
    path = _path(assertion.relative(diff.path, base)) if base else _path(diff.path)
    if diff.kind == "missing":
        if diff.expected is assertion.NOTHING:
            return _("{path} is missing").format(path=path)
        return _("{path} is missing, expected {expected}").format(
            path=path, expected=flow(diff.expected)
        )
    if diff.kind == "mismatch":
        value, expected = diff.value, diff.expected
        if _noun(value) != _noun(expected):
            return _("{path} is {value} ({noun}), expected {expected} ({wanted})").format(
                path=path,
                value=flow(value),
                noun=_noun(value),
                expected=flow(expected),
                wanted=_noun(expected),
            )
        return _("{path} is {value}, expected {expected}").format(
            path=path, value=flow(value), expected=flow(expected)
        )
    if diff.kind == "type":
        return _("{path} is {noun}, expected {wanted}").format(
            path=path, noun=_noun(diff.value), wanted=_wanted(diff.wanted)
        )
    if diff.kind == "not-empty":
        return _("{path} has {count} elements, expected none: {value}").format(
            path=path, count=len(diff.value), value=flow(diff.value, 60)
        )
    if diff.kind == "no-element":
        return _no_element(diff, path)
    if diff.kind == "error":
        if diff.path and diff.path[-1] == f"({diff.expression})":  # the key is the expression
            return _("{path} cannot be evaluated: {reason}").format(path=path, reason=diff.reason)
        return _("{path}: cannot evaluate ({expression}): {reason}").format(
            path=path, expression=diff.expression, reason=diff.reason
        )
    return f"{path}: {diff.kind}"


def _no_element(diff: Difference, path: str) -> str:
    expected = flow(diff.expected, 80)
    if not diff.value:
        return _("{path}: no element matches {expected}; the list is empty").format(
            path=path, expected=expected
        )
    if not isinstance(diff.expected, (dict, list)) or diff.closest is None:
        return _("{path}: no element matches {expected}; it holds {elements}").format(
            path=path, expected=expected, elements=flow(diff.value, 80)
        )
    element = (*diff.path, diff.closest)
    inner = [describe(d, element) if d.path != element else describe(d) for d in diff.inner]
    if len(inner) > SHOWN_INNER:
        inner = [*inner[:SHOWN_INNER], _more(len(inner) - SHOWN_INNER)]
    return _("{path}: no element matches {expected}; closest {element}: {differences}").format(
        path=path,
        expected=expected,
        element=assertion.label(element),
        differences=", ".join(inner),
    )


def _more(count: int) -> str:
    return _("and {count} more").format(count=count)


def differences_text(found: list[Difference]) -> str:
    """At most :data:`SHOWN` differences, ``; ``-joined, then how many more."""
    shown = [describe(d) for d in found[:SHOWN]]
    if len(found) > SHOWN:
        shown.append(_more(len(found) - SHOWN))
    return "; ".join(shown)


# -- reading the cluster --------------------------------------------------------------------


def _group(spec: types._Addressed) -> str:
    """``Pod with labels app=x in istio``: the objects a selector names."""
    if spec.namespace:
        return _("{kind} with labels {selector} in {namespace}").format(
            kind=spec.kind, selector=spec.selector, namespace=spec.namespace
        )
    return _("{kind} with labels {selector}").format(kind=spec.kind, selector=spec.selector)


def _get_hint(spec: types._Addressed, name: str | None = None) -> str:
    ns = f" -n {spec.namespace}" if spec.namespace else ""
    if name or spec.name:
        return f"kubectl get {spec.kind.lower()} {name or spec.name}{ns} -o yaml"
    return f"kubectl get {spec.kind.lower()}{ns} -l '{spec.selector}' --show-labels"


def _selected(spec: types._Addressed, ctx: CheckContext) -> list[dict[str, Any]]:
    assert spec.selector is not None
    found = ctx.kube.list(spec.api_version, spec.kind, spec.namespace, spec.selector)
    chosen = [o for o in found if selectors.matches(spec.selector, o["metadata"].get("labels"))]
    return sorted(chosen, key=lambda o: str(o["metadata"].get("name")))


def _name(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("name"))


@implements(types.Assert)
def assert_object(spec: types.Assert, ctx: CheckContext) -> CheckResult:
    if spec.name is not None:
        return _assert_named(spec, spec.name, ctx)
    group, objects = _group(spec), _selected(spec, ctx)
    if not objects:
        return CheckResult(Status.FAILED, _("no {group}").format(group=group), hint=_get_hint(spec))
    results = [(_name(o), assertion.match(o, spec.object)) for o in objects]
    failing = [(name, found) for name, found in results if found]
    matching = [name for name, found in results if not found]
    evidence = {"matching": matching, "not_matching": [name for name, _found in failing]}
    if spec.match == "all":
        if not failing:
            return CheckResult(
                Status.PASSED,
                _("{group}: all {total} match").format(group=group, total=len(objects)),
                evidence=evidence,
            )
        name, found = failing[0]
        return CheckResult(
            Status.FAILED,
            _("{group}: {failing} of {total} do not match ({names}); {name}: {differences}").format(
                group=group,
                failing=len(failing),
                total=len(objects),
                names=", ".join(n for n, _found in failing),
                name=name,
                differences=differences_text(found),
            ),
            hint=_get_hint(spec, name),
            evidence={**evidence, "differences": [describe(d) for d in found]},
        )
    if matching:
        return CheckResult(
            Status.PASSED,
            _("{group}: {matching} of {total} match ({names})").format(
                group=group, matching=len(matching), total=len(objects), names=", ".join(matching)
            ),
            evidence=evidence,
        )
    name, found = min(failing, key=lambda item: len(item[1]))
    return CheckResult(
        Status.FAILED,
        _("{group}: none of {total} matches; closest {name}: {differences}").format(
            group=group, total=len(objects), name=name, differences=differences_text(found)
        ),
        hint=_get_hint(spec, name),
        evidence={**evidence, "differences": [describe(d) for d in found]},
    )


def _assert_named(spec: types.Assert, name: str, ctx: CheckContext) -> CheckResult:
    obj = ctx.kube.get(spec.api_version, spec.kind, name, spec.namespace)
    where = object_ref(spec.kind, name, spec.namespace)
    if obj is None:
        return CheckResult(
            Status.FAILED, _("{where} does not exist").format(where=where), hint=_get_hint(spec)
        )
    found = assertion.match(obj, spec.object)
    if found:
        return CheckResult(
            Status.FAILED,
            f"{where}: {differences_text(found)}",
            hint=_get_hint(spec),
            evidence={"differences": [describe(d) for d in found]},
        )
    return CheckResult(
        Status.PASSED,
        _("{where} matches {expected}").format(where=where, expected=flow(spec.object, 100)),
    )


@implements(types.Absent)
def absent(spec: types.Absent, ctx: CheckContext) -> CheckResult:
    if spec.name is not None:
        return _absent_named(spec, spec.name, ctx)
    group, objects = _group(spec), _selected(spec, ctx)
    if not objects:
        return CheckResult(Status.PASSED, _("no {group}").format(group=group))
    names = [_name(o) for o in objects]
    if spec.object is None:
        return CheckResult(
            Status.FAILED,
            _("{group}: {count} exist ({names})").format(
                group=group, count=len(objects), names=", ".join(names)
            ),
            hint=_get_hint(spec),
            evidence={"found": names},
        )
    tree = spec.object
    hits = [o for o in objects if assertion.matches(o, tree)]
    if not hits:
        return CheckResult(
            Status.PASSED,
            _("{group}: none of {total} matches {expected}").format(
                group=group, total=len(objects), expected=flow(tree, 80)
            ),
        )
    first = hits[0]
    return CheckResult(
        Status.FAILED,
        _("{group}: {count} of {total} match ({names}); {name} has {found}").format(
            group=group,
            count=len(hits),
            total=len(objects),
            names=", ".join(_name(o) for o in hits),
            name=_name(first),
            found=flow(assertion.covered(first, tree)),
        ),
        hint=_get_hint(spec, _name(first)),
        evidence={"matching": [_name(o) for o in hits]},
    )


def _absent_named(spec: types.Absent, name: str, ctx: CheckContext) -> CheckResult:
    obj = ctx.kube.get(spec.api_version, spec.kind, name, spec.namespace)
    where = object_ref(spec.kind, name, spec.namespace)
    if obj is None:
        return CheckResult(Status.PASSED, _("{where} does not exist").format(where=where))
    if spec.object is None:
        return CheckResult(
            Status.FAILED,
            _("{where} exists").format(where=where),
            hint=f"kubectl delete {spec.kind.lower()} {name}"
            + (f" -n {spec.namespace}" if spec.namespace else ""),
            evidence={"uid": obj["metadata"].get("uid")},
        )
    found = assertion.match(obj, spec.object)
    if found:
        return CheckResult(
            Status.PASSED,
            _("{where} does not match: {differences}").format(
                where=where, differences=differences_text(found[:1])
            ),
        )
    return CheckResult(
        Status.FAILED,
        _("{where} has {found}").format(
            where=where, found=flow(assertion.covered(obj, spec.object))
        ),
        hint=_get_hint(spec),
    )
