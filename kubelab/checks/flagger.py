"""Checks of Flagger canaries (flagger-canary).

Like every check these only read: the Canary, the Deployments Flagger manages and the
Events it records on a Canary. What Flagger (v1.44) writes, and so what is read here:
``status.phase``, ``canaryWeight``, ``failedChecks``, ``iterations`` of the Canary; the
``<targetRef.name>-primary`` Deployment holding the promoted pod spec; core v1 Events on
the Canary ("Advance app.ns canary weight 20", "Halt app.ns advancement success rate
42.00% < 99%", "Rolling back app.ns failed checks threshold reached 5", "Canary failed!
Scaling down app.ns", "Promotion completed! Scaling down app.ns").

``pending`` means Flagger is still moving (an analysis running, a new revision not picked
up yet); ``failed`` means the state is wrong and will not fix itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from kubelab.checks import types
from kubelab.checks.objects import (
    _containers,
    _one_of,
    first_image,
    image_tag,
    parse_time,
)
from kubelab.checks.registry import CheckContext, implements
from kubelab.checks.result import CheckResult, Status
from kubelab.i18n import _
from kubelab.k8s.objects import dig
from kubelab.k8s.objects import meta as meta_of

FLAGGER_API = "flagger.app/v1beta1"
# Flagger phases in which the analysis is still under way (the phase will change by itself).
FLAGGER_IN_FLIGHT = frozenset(
    {"Initializing", "Waiting", "Progressing", "WaitingPromotion", "Promoting", "Finalising"}
)

_WEIGHT_EVENT = re.compile(r"canary weight (\d+)")
_ITERATION_EVENT = re.compile(r"canary iteration (\d+)/(\d+)")


def canary_events(ctx: CheckContext, name: str, namespace: str) -> list[dict[str, Any]]:
    """The Events recorded on Canary ``name``, oldest first.

    Filtered here rather than with a field selector (not every API serves
    ``involvedObject.*`` selectors for events).
    """
    events = [
        e
        for e in ctx.kube.list("v1", "Event", namespace)
        if dig(e, "involvedObject", "kind") == "Canary" and dig(e, "involvedObject", "name") == name
    ]

    def when(event: dict[str, Any]) -> datetime:
        stamp = (
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("firstTimestamp")
            or meta_of(event).get("creationTimestamp")
        )
        return parse_time(stamp)

    return sorted(events, key=when)


def _messages(events: list[dict[str, Any]]) -> list[str]:
    return [str(e.get("message") or "") for e in events if e.get("message")]


def current_run(messages: list[str]) -> list[str]:
    """The messages since Flagger last started analysing a revision ("New revision
    detected! ..."): events live an hour, so earlier runs of the exercise are still there.

    Kubernetes folds a repeated message into one event and moves its ``lastTimestamp``, so
    with events sorted by it, a step repeated in this run ("canary weight 10") counts here
    and one only reached before ("canary weight 50") does not."""
    starts = [i for i, text in enumerate(messages) if "New revision detected" in text]
    return messages[starts[-1] :] if starts else messages


def max_event_weight(messages: Iterable[str]) -> int | None:
    """The highest canary weight Flagger announced ("Advance app.ns canary weight N")."""
    weights = [int(m.group(1)) for text in messages for m in _WEIGHT_EVENT.finditer(text)]
    return max(weights) if weights else None


def max_event_iteration(messages: Iterable[str]) -> tuple[int, int] | None:
    """The furthest iteration Flagger announced ("Advance app.ns canary iteration N/M"; A/B
    testing and blue/green with traffic mirroring count iterations, not weights)."""
    found = [
        (int(m.group(1)), int(m.group(2)))
        for text in messages
        for m in _ITERATION_EVENT.finditer(text)
    ]
    return max(found) if found else None


def _last(messages: list[str], *needles: str) -> str | None:
    for text in reversed(messages):
        if any(n in text for n in needles):
            return text
    return None


def _pod_spec_digest(workload: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    """What a new revision usually changes (image, command, args, literal env values),
    per container; Flagger copies these unchanged from the target to the primary."""
    out = []
    for c in _containers(workload):
        env = sorted(
            (str(e.get("name")), str(e.get("value")))
            for e in c.get("env") or []
            if isinstance(e, dict) and "value" in e
        )
        out.append((c.get("name"), c.get("image"), c.get("command"), c.get("args"), tuple(env)))
    return out


def flagger_max_weight(canary: dict[str, Any]) -> int | None:
    """The weight at which Flagger promotes a weighted canary release (its ``maxWeight``,
    or the last of ``stepWeights``, 100 by default); None when the analysis counts
    iterations (A/B testing, blue/green) or is skipped. As ``Controller.maxWeight``."""
    spec = canary.get("spec") or {}
    analysis = spec.get("analysis") or spec.get("canaryAnalysis")
    if not isinstance(analysis, dict) or spec.get("skipAnalysis"):
        return None
    if int(analysis.get("iterations") or 0) > 0:
        return None
    step_weights = analysis.get("stepWeights") or []
    if step_weights:
        return min(100, int(step_weights[-1]))
    return int(analysis.get("maxWeight") or 0) or 100


def reached_weight(
    canary: dict[str, Any], phase: str, messages: list[str]
) -> tuple[int | None, str]:
    """How far the canary weight got in the latest analysis, and how that is known.

    Flagger's events are the record, but an incomplete one: client-go's event recorder
    merges an object's 11th distinct message within 10 minutes into one "(combined from
    similar events)" event, and lets through 25 events per object and then one per 5
    minutes. So the current ``status.canaryWeight`` counts while the analysis runs, and a
    weighted canary that Succeeded got to its maxWeight (Flagger promotes only there).
    """
    weight, source = max_event_weight(messages), "events"
    current = int(dig(canary, "status", "canaryWeight") or 0)
    if phase in FLAGGER_IN_FLIGHT and current > (weight or 0):
        weight, source = current, "status.canaryWeight"
    promoted_at = flagger_max_weight(canary)
    skipped = any("analysis was skipped" in m for m in messages)
    if phase == "Succeeded" and promoted_at and not skipped and promoted_at > (weight or 0):
        weight, source = promoted_at, "promoted at maxWeight"
    return weight, source


def _canary_state(phase: str, status: dict[str, Any]) -> str:
    weight = int(status.get("canaryWeight") or 0)
    failed = int(status.get("failedChecks") or 0)
    iterations = int(status.get("iterations") or 0)
    parts = [_("canary weight {weight}%").format(weight=weight)]
    if iterations:
        parts.append(_("iteration {iteration}").format(iteration=iterations))
    if failed == 1:
        parts.append(_("{count} failed check").format(count=failed))
    else:
        parts.append(_("{count} failed checks").format(count=failed))
    return f"{phase} ({', '.join(parts)})"


@implements(types.FlaggerCanary)
def flagger_canary(spec: types.FlaggerCanary, ctx: CheckContext) -> CheckResult:
    where = f"Canary {spec.namespace}/{spec.name}"
    describe = f"kubectl describe canary {spec.name} -n {spec.namespace}"
    canary = ctx.kube.get(FLAGGER_API, "Canary", spec.name, spec.namespace)
    wanted: list[str] = [str(p) for p in spec.phase]
    if canary is None:
        return CheckResult(
            Status.FAILED,
            _("{where} does not exist (expected it {expected})").format(
                where=where, expected=_one_of(wanted)
            ),
            hint=f"kubectl get canaries -n {spec.namespace}",
            evidence={"expected": wanted},
        )
    status = canary.get("status") or {}
    phase = str(status.get("phase") or "")
    target = str(dig(canary, "spec", "targetRef", "name") or spec.name)
    primary_name = f"{target}-primary"
    events = canary_events(ctx, spec.name, spec.namespace)
    messages = current_run(_messages(events))
    top_weight, weight_source = reached_weight(canary, phase, messages)
    evidence: dict[str, Any] = {
        "phase": phase,
        "expected": wanted,
        "canary_weight": status.get("canaryWeight"),
        "failed_checks": status.get("failedChecks"),
        "iterations": status.get("iterations"),
        "max_event_weight": max_event_weight(messages),
        "reached_weight": top_weight,
        "reached_weight_source": weight_source,
        "max_event_iteration": max_event_iteration(messages),
        "events": messages[-10:],
    }
    if not phase:
        return CheckResult(
            Status.PENDING,
            _(
                "{where} has no status yet: Flagger has not initialized it (is Flagger running?)"
            ).format(where=where),
            hint=f"{describe}; kubectl get pods -n istio-system -l app.kubernetes.io/name=flagger",
            evidence=evidence,
        )
    state = _canary_state(phase, status)

    primary: dict[str, Any] | None = None
    if phase in ("Succeeded", "Initialized") or spec.primary_tag:
        primary = ctx.kube.get("apps/v1", "Deployment", primary_name, spec.namespace)
    if primary is not None:
        evidence["primary_image"] = first_image(primary)

    # A final or idle phase from before: the target changed but Flagger has not noticed yet
    # (it looks every analysis interval), so that phase is about to change.
    if phase in ("Succeeded", "Initialized") and primary is not None:
        deployment = ctx.kube.get("apps/v1", "Deployment", target, spec.namespace)
        if deployment is not None and _pod_spec_digest(deployment) != _pod_spec_digest(primary):
            evidence["target_image"] = first_image(deployment)
            return CheckResult(
                Status.PENDING,
                _(
                    "{where} is still {phase} from the previous revision: Deployment {target} "
                    "changed ({target_image}) and Flagger has not started analysing "
                    "it yet (the primary runs {primary_image})"
                ).format(
                    where=where,
                    phase=phase,
                    target=target,
                    target_image=first_image(deployment),
                    primary_image=first_image(primary),
                ),
                hint=_("Wait for the next analysis interval; {describe}").format(describe=describe),
                evidence=evidence,
            )

    if phase not in wanted:
        return _canary_wrong_phase(spec, where, describe, phase, state, wanted, messages, evidence)

    problems = []
    if spec.primary_tag:
        if primary is None:
            problems.append(
                _(
                    "Deployment {namespace}/{primary} does not exist (Flagger creates "
                    "it when it initializes the canary)"
                ).format(namespace=spec.namespace, primary=primary_name)
            )
        else:
            image = first_image(primary)
            # image_tag("") is "latest", as image_tag("(no image)") was.
            if image_tag(image or "") != spec.primary_tag:
                problems.append(
                    _("the primary Deployment {primary} runs {image}, expected tag {tag}").format(
                        primary=primary_name, image=image or _("(no image)"), tag=spec.primary_tag
                    )
                )
    if spec.reached_weight is not None and (top_weight or 0) < spec.reached_weight:
        if top_weight is None:
            problems.append(
                _(
                    "no 'canary weight' events of {where} in its latest analysis (Flagger "
                    "records one per step; Kubernetes keeps events for one hour and throttles "
                    "them)"
                ).format(where=where)
            )
        else:
            problems.append(
                _(
                    "the canary weight got to {weight}% at most in its latest analysis, "
                    "expected at least {expected}%"
                ).format(weight=top_weight, expected=spec.reached_weight)
            )
    missing = [text for text in spec.events if not any(text.lower() in m.lower() for m in messages)]
    if missing:
        texts = ", ".join(repr(m) for m in missing)
        if messages:
            problems.append(
                _(
                    "no event of the canary's latest analysis mentions {texts} (last event: "
                    "{last_event!r}); note that Kubernetes merges and throttles an object's "
                    "events, so a busy canary can miss some"
                ).format(texts=texts, last_event=messages[-1])
            )
        else:
            problems.append(
                _(
                    "no event of the canary's latest analysis mentions {texts} (it has no "
                    "events); note that Kubernetes merges and throttles an object's events, "
                    "so a busy canary can miss some"
                ).format(texts=texts)
            )
    if problems and phase in FLAGGER_IN_FLIGHT:
        return CheckResult(
            Status.PENDING,
            _("{where} is {state}; not yet: {problems}").format(
                where=where, state=state, problems="; ".join(problems)
            ),
            hint=describe,
            evidence=evidence,
        )
    passed = _("{where} is {state}").format(where=where, state=state)
    if top_weight is not None:
        passed += _("; its canary weight reached {weight}%").format(weight=top_weight)
        if weight_source == "promoted at maxWeight":
            passed += _(" (Flagger promotes at maxWeight)")
    iteration = evidence["max_event_iteration"]
    if iteration:
        passed += _("; its analysis reached iteration {iteration}/{iterations}").format(
            iteration=iteration[0], iterations=iteration[1]
        )
    if primary is not None and spec.primary_tag:
        passed += _("; the primary runs {image}").format(image=first_image(primary))
    if problems:
        problems[0] = _("{where} is {phase}, but {problem}").format(
            where=where, phase=phase, problem=problems[0]
        )
    return CheckResult.from_problems(problems, passed, hint=describe, evidence=evidence)


def _canary_wrong_phase(
    spec: types.FlaggerCanary,
    where: str,
    describe: str,
    phase: str,
    state: str,
    wanted: list[str],
    messages: list[str],
    evidence: dict[str, Any],
) -> CheckResult:
    expected = _one_of(wanted)
    halt = _last(messages, "Halt ")
    if phase in FLAGGER_IN_FLIGHT:
        message = _(
            "{where} is {state}; Flagger is still analysing (waiting for {expected})"
        ).format(where=where, state=state, expected=expected)
        if halt:
            message += _("; last halt: {halt!r}").format(halt=halt)
        return CheckResult(Status.PENDING, message, hint=describe, evidence=evidence)
    if phase == "Succeeded" and "Failed" in wanted:
        message = _(
            "{where} was promoted (Succeeded), but this exercise wants the analysis to fail: "
            "send errors (requests to /status/500) while the analysis runs, with a new "
            "revision of the deployment"
        ).format(where=where)
    elif phase == "Failed" and "Succeeded" in wanted:
        rollback = _last(messages, "Rolling back")
        message = _("{where} Failed: Flagger rolled back the canary").format(where=where)
        if rollback:
            message += f" ({rollback!r})"
        if halt:
            message += _("; last halt: {halt!r}").format(halt=halt)
        message += _("; fix the cause, then start a new revision to run the analysis again")
    elif phase == "Initialized":
        message = _(
            "{where} is Initialized: it waits for a new revision and no analysis has run "
            "(expected {expected}); change the deployment's pod template (e.g. its image) "
            "to start one"
        ).format(where=where, expected=expected)
    elif phase in ("Terminating", "Terminated"):
        message = _("{where} is {phase}: it is being deleted (expected {expected})").format(
            where=where, phase=phase, expected=expected
        )
    else:
        message = _("{where} is {state}, expected {expected}").format(
            where=where, state=state, expected=expected
        )
    return CheckResult(Status.FAILED, message, hint=describe, evidence=evidence)
