"""Checks of progressive delivery: Flagger canaries and Argo Rollouts.

Registered in the same :data:`~kubelab.checks.builtin.IMPLEMENTATIONS` registry as the
built-in checks (``kubelab.checks.builtin`` imports this module, so the registry is always
complete). Like them these checks only read: the Canary, Rollout and AnalysisRun objects,
the Deployments, ReplicaSets and Services the controllers manage, and the Events Flagger
records on a Canary.

What the controllers write, and so what is read here (Flagger v1.44; Argo Rollouts v1.8
source, unchanged in the v1.9 the catalog installs):

* Flagger: ``status.phase``, ``canaryWeight``, ``failedChecks``, ``iterations`` of the
  Canary; the ``<targetRef.name>-primary`` Deployment holding the promoted pod spec; core
  v1 Events on the Canary ("Advance app.ns canary weight 20", "Halt app.ns advancement
  success rate 42.00% < 99%", "Rolling back app.ns failed checks threshold reached 5",
  "Canary failed! Scaling down app.ns", "Promotion completed! Scaling down app.ns").
* Argo Rollouts: ``status.phase``/``message`` of the Rollout (Healthy, Progressing, Paused,
  Degraded; read as ``kubectl argo rollouts`` does, see :func:`rollout_phase`), the label
  ``rollouts-pod-template-hash`` on its ReplicaSets and in the selectors of the Services
  it manages, and AnalysisRuns owned by the Rollout, labelled ``rollout-type``
  (PrePromotion, PostPromotion, Background, Step) and ``step-index``. An AnalysisRun does
  not record which AnalysisTemplate it came from (its name is
  ``<rollout>-<pod hash>-<revision>[-<step or pre/post>]``), so runs of one template are
  found through where the Rollout references that template.

``pending`` means the controller is still moving (an analysis running, a rollout
progressing, a new revision not picked up yet); ``failed`` means the state is wrong and
will not fix itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from kubelab.checks import types
from kubelab.checks.builtin import CheckContext, implements
from kubelab.checks.result import CheckResult, Status

FLAGGER_API = "flagger.app/v1beta1"
ROLLOUTS_API = "argoproj.io/v1alpha1"
POD_HASH_LABEL = "rollouts-pod-template-hash"
ROLLOUT_TYPE_LABEL = "rollout-type"
STEP_INDEX_LABEL = "step-index"
REVISION_ANNOTATION = "rollout.argoproj.io/revision"

# Flagger phases in which the analysis is still under way (the phase will change by itself).
FLAGGER_IN_FLIGHT = frozenset(
    {"Initializing", "Waiting", "Progressing", "WaitingPromotion", "Promoting", "Finalising"}
)

_WEIGHT_EVENT = re.compile(r"canary weight (\d+)")
_ITERATION_EVENT = re.compile(r"canary iteration (\d+)/(\d+)")
# What a measurement says when its query returned an empty vector and the condition indexed
# it: Argo Rollouts v1.8 (expr panics in reflect) and, from v1.10, its own wording.
_EMPTY_RESULT = re.compile(
    r"index out of range|metric result is nil or empty|no data returned", re.IGNORECASE
)
_EPOCH = datetime.min.replace(tzinfo=UTC)


# -- small readers ---------------------------------------------------------------------------


def _dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` or None when any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _name(obj: dict[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


def parse_time(value: Any) -> datetime:
    """An RFC 3339 timestamp as an aware datetime; the epoch when absent or unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return _EPOCH
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _EPOCH
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def image_tag(image: str) -> str:
    """The tag of an image reference: ``reg:5000/app:v2`` -> ``v2``; none means ``latest``."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def _containers(workload: dict[str, Any] | None) -> list[dict[str, Any]]:
    containers = _dig(workload, "spec", "template", "spec", "containers")
    return [c for c in containers or [] if isinstance(c, dict)]


def first_image(workload: dict[str, Any] | None) -> str | None:
    """The image of the first container of a Deployment's or ReplicaSet's pod template."""
    containers = _containers(workload)
    image = containers[0].get("image") if containers else None
    return str(image) if image else None


def _owned_by(obj: dict[str, Any], kind: str, name: str) -> bool:
    refs = _meta(obj).get("ownerReferences") or []
    return any(
        isinstance(r, dict) and r.get("kind") == kind and r.get("name") == name for r in refs
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _one_of(values: Iterable[str]) -> str:
    values = list(values)
    return values[0] if len(values) == 1 else "one of " + ", ".join(values)


# -- Flagger ---------------------------------------------------------------------------------


def canary_events(ctx: CheckContext, name: str, namespace: str) -> list[dict[str, Any]]:
    """The Events recorded on Canary ``name``, oldest first.

    Filtered here rather than with a field selector (not every API serves
    ``involvedObject.*`` selectors for events).
    """
    events = [
        e
        for e in ctx.kube.list("v1", "Event", namespace)
        if _dig(e, "involvedObject", "kind") == "Canary"
        and _dig(e, "involvedObject", "name") == name
    ]

    def when(event: dict[str, Any]) -> datetime:
        stamp = (
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("firstTimestamp")
            or _meta(event).get("creationTimestamp")
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
    current = int(_dig(canary, "status", "canaryWeight") or 0)
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
    parts = [f"canary weight {weight}%"]
    if iterations:
        parts.append(f"iteration {iterations}")
    parts.append(f"{_plural(failed, 'failed check')}")
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
            f"{where} does not exist (expected it {_one_of(wanted)})",
            hint=f"kubectl get canaries -n {spec.namespace}",
            evidence={"expected": wanted},
        )
    status = canary.get("status") or {}
    phase = str(status.get("phase") or "")
    target = str(_dig(canary, "spec", "targetRef", "name") or spec.name)
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
            f"{where} has no status yet: Flagger has not initialized it (is Flagger running?)",
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
                f"{where} is still {phase} from the previous revision: Deployment {target} "
                f"changed ({first_image(deployment)}) and Flagger has not started analysing "
                f"it yet (the primary runs {first_image(primary)})",
                hint=f"Wait for the next analysis interval; {describe}",
                evidence=evidence,
            )

    if phase not in wanted:
        return _canary_wrong_phase(spec, where, describe, phase, state, wanted, messages, evidence)

    problems = []
    if spec.primary_tag:
        if primary is None:
            problems.append(
                f"Deployment {spec.namespace}/{primary_name} does not exist (Flagger creates "
                "it when it initializes the canary)"
            )
        else:
            image = first_image(primary) or "(no image)"
            if image_tag(image) != spec.primary_tag:
                problems.append(
                    f"the primary Deployment {primary_name} runs {image}, expected tag "
                    f"{spec.primary_tag}"
                )
    if spec.reached_weight is not None and (top_weight or 0) < spec.reached_weight:
        if top_weight is None:
            problems.append(
                f"no 'canary weight' events of {where} in its latest analysis (Flagger "
                "records one per step; Kubernetes keeps events for one hour and throttles "
                "them)"
            )
        else:
            problems.append(
                f"the canary weight got to {top_weight}% at most in its latest analysis, "
                f"expected at least {spec.reached_weight}%"
            )
    missing = [text for text in spec.events if not any(text.lower() in m.lower() for m in messages)]
    if missing:
        problems.append(
            "no event of the canary's latest analysis mentions "
            + ", ".join(repr(m) for m in missing)
            + (f" (last event: {messages[-1]!r})" if messages else " (it has no events)")
            + "; note that Kubernetes merges and throttles an object's events, so a busy "
            "canary can miss some"
        )
    if problems and phase in FLAGGER_IN_FLIGHT:
        return CheckResult(
            Status.PENDING,
            f"{where} is {state}; not yet: " + "; ".join(problems),
            hint=describe,
            evidence=evidence,
        )
    passed = f"{where} is {state}"
    if top_weight is not None:
        passed += f"; its canary weight reached {top_weight}%"
        if weight_source == "promoted at maxWeight":
            passed += " (Flagger promotes at maxWeight)"
    iteration = evidence["max_event_iteration"]
    if iteration:
        passed += f"; its analysis reached iteration {iteration[0]}/{iteration[1]}"
    if primary is not None and spec.primary_tag:
        passed += f"; the primary runs {first_image(primary)}"
    if problems:
        problems[0] = f"{where} is {phase}, but {problems[0]}"
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
        message = f"{where} is {state}; Flagger is still analysing (waiting for {expected})"
        if halt:
            message += f"; last halt: {halt!r}"
        return CheckResult(Status.PENDING, message, hint=describe, evidence=evidence)
    if phase == "Succeeded" and "Failed" in wanted:
        message = (
            f"{where} was promoted (Succeeded), but this exercise wants the analysis to fail: "
            "send errors (requests to /status/500) while the analysis runs, with a new "
            "revision of the deployment"
        )
    elif phase == "Failed" and "Succeeded" in wanted:
        rollback = _last(messages, "Rolling back")
        message = f"{where} Failed: Flagger rolled back the canary"
        if rollback:
            message += f" ({rollback!r})"
        if halt:
            message += f"; last halt: {halt!r}"
        message += "; fix the cause, then start a new revision to run the analysis again"
    elif phase == "Initialized":
        message = (
            f"{where} is Initialized: it waits for a new revision and no analysis has run "
            f"(expected {expected}); change the deployment's pod template (e.g. its image) "
            "to start one"
        )
    elif phase in ("Terminating", "Terminated"):
        message = f"{where} is {phase}: it is being deleted (expected {expected})"
    else:
        message = f"{where} is {state}, expected {expected}"
    return CheckResult(Status.FAILED, message, hint=describe, evidence=evidence)


# -- Argo Rollouts: the Rollout ----------------------------------------------------------------


def rollout_phase(rollout: dict[str, Any]) -> tuple[str, str]:
    """Phase and message as ``kubectl argo rollouts get`` shows them.

    Mirrors Argo Rollouts' ``GetRolloutPhase``: a spec change the controller has not
    observed yet (``status.observedGeneration`` behind ``metadata.generation``) and a
    promotion not reacted to yet (``controllerPause`` without pause conditions) are
    Progressing whatever the stored phase says.
    """
    status = rollout.get("status") or {}
    observed = str(status.get("observedGeneration") or "")
    generation = _meta(rollout).get("generation")
    if observed.isdigit() and isinstance(generation, int) and int(observed) < generation:
        return "Progressing", "waiting for rollout spec update to be observed"
    if status.get("controllerPause") and not status.get("pauseConditions"):
        return "Progressing", "waiting for rollout to unpause"
    return str(status.get("phase") or ""), str(status.get("message") or "")


def _strategy(rollout: dict[str, Any]) -> str:
    strategy = _dig(rollout, "spec", "strategy") or {}
    return "blueGreen" if strategy.get("blueGreen") else "canary"


def _steps(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    steps = _dig(rollout, "spec", "strategy", "canary", "steps") or []
    return [s if isinstance(s, dict) else {} for s in steps]


def canary_weight(rollout: dict[str, Any]) -> tuple[int | None, str]:
    """The canary's traffic weight and where it comes from.

    With traffic routing Argo Rollouts records what it set in ``status.canary.weights``;
    otherwise it is the last ``setWeight`` at or before the current step (Argo Rollouts'
    ``GetCurrentSetWeight``: 0 once aborted, 100 after the last step).
    """
    status = rollout.get("status") or {}
    recorded = _dig(status, "canary", "weights", "canary", "weight")
    if isinstance(recorded, int):
        return recorded, "status.canary.weights"
    if _strategy(rollout) != "canary":
        return None, "blueGreen has no canary weight"
    if status.get("abort"):
        return 0, "aborted"
    steps = _steps(rollout)
    index = status.get("currentStepIndex")
    if not isinstance(index, int) or index >= len(steps):
        return 100, "all steps done"
    for step in reversed(steps[: index + 1]):
        if isinstance(step.get("setWeight"), int):
            return int(step["setWeight"]), "steps"
    return 0, "steps"


def _replicasets(ctx: CheckContext, namespace: str, rollout: str) -> dict[str, dict[str, Any]]:
    """The Rollout's ReplicaSets by their ``rollouts-pod-template-hash``."""
    by_hash: dict[str, dict[str, Any]] = {}
    for rs in ctx.kube.list("apps/v1", "ReplicaSet", namespace):
        pod_hash = (_meta(rs).get("labels") or {}).get(POD_HASH_LABEL)
        if not pod_hash:
            continue
        # Owned ones win over a stray ReplicaSet carrying the same label value.
        if _owned_by(rs, "Rollout", rollout) or pod_hash not in by_hash:
            by_hash[str(pod_hash)] = rs
    return by_hash


def _rs_text(rs: dict[str, Any]) -> str:
    return f"ReplicaSet {_name(rs)} ({first_image(rs) or 'no image'})"


def _pause_text(rollout: dict[str, Any]) -> str:
    status = rollout.get("status") or {}
    reasons = [
        str(c.get("reason"))
        for c in status.get("pauseConditions") or []
        if isinstance(c, dict) and c.get("reason")
    ]
    if _dig(rollout, "spec", "paused"):
        reasons.append("spec.paused")
    return ", ".join(reasons)


def is_paused(rollout: dict[str, Any]) -> bool:
    """Waiting for a promotion: pause conditions set, or paused by hand (``spec.paused``)."""
    return bool(_dig(rollout, "status", "pauseConditions")) or bool(_dig(rollout, "spec", "paused"))


def _timed_pause(rollout: dict[str, Any]) -> str | None:
    """The duration of the pause step the rollout is on, if it ends by itself."""
    index = _dig(rollout, "status", "currentStepIndex")
    steps = _steps(rollout)
    if _dig(rollout, "spec", "paused") or not isinstance(index, int) or index >= len(steps):
        return None
    duration = _dig(steps[index], "pause", "duration")
    if duration in (None, "", 0):
        return None
    # An integer (or a string without a unit) is seconds, as Argo Rollouts reads it.
    return f"{duration}s" if str(duration).isdigit() else str(duration)


def _rollout_summary(rollout: dict[str, Any], phase: str, message: str) -> str:
    status = rollout.get("status") or {}
    text = phase or "(no phase yet)"
    details = []
    pause = _pause_text(rollout)
    if phase == "Paused" and pause:
        details.append(pause)
    if message and message != pause:
        details.append(message)
    if details:
        text += f" ({'; '.join(details)})"
    index = status.get("currentStepIndex")
    if _strategy(rollout) == "canary" and isinstance(index, int):
        text += f" at step {index} of {len(_steps(rollout))}"
    return text


def _promote_hint(name: str, namespace: str) -> str:
    return (
        f"kubectl argo rollouts get rollout {name} -n {namespace}; "
        f"kubectl argo rollouts promote {name} -n {namespace}"
    )


@implements(types.RolloutStatus)
def rollout_status(spec: types.RolloutStatus, ctx: CheckContext) -> CheckResult:
    where = f"Rollout {spec.namespace}/{spec.name}"
    get_hint = f"kubectl argo rollouts get rollout {spec.name} -n {spec.namespace}"
    rollout = ctx.kube.get(ROLLOUTS_API, "Rollout", spec.name, spec.namespace)
    wanted: list[str] = [str(p) for p in spec.phase]
    if rollout is None:
        return CheckResult(
            Status.FAILED,
            f"{where} does not exist (expected it {_one_of(wanted)})",
            hint=f"kubectl get rollouts -n {spec.namespace}",
            evidence={"expected": wanted},
        )
    status = rollout.get("status") or {}
    phase, message = rollout_phase(rollout)
    summary = _rollout_summary(rollout, phase, message)
    weight, weight_source = canary_weight(rollout)
    evidence: dict[str, Any] = {
        "phase": phase,
        "message": message,
        "expected": wanted,
        "step": status.get("currentStepIndex"),
        "paused": is_paused(rollout),
        "pause_reasons": _pause_text(rollout),
        "canary_weight": weight,
        "weight_source": weight_source,
        "stable_rs": status.get("stableRS"),
        "current_pod_hash": status.get("currentPodHash"),
        "abort": bool(status.get("abort")),
    }

    if phase not in wanted:
        expected = _one_of(wanted)
        if phase in ("", "Progressing"):
            return CheckResult(
                Status.PENDING,
                f"{where} is {summary}; not {expected} yet",
                hint=get_hint,
                evidence=evidence,
            )
        if phase == "Degraded":
            hint = get_hint
            if status.get("abort"):
                hint += (
                    f"; kubectl get analysisrun -n {spec.namespace} (why it aborted); after "
                    f"fixing it: kubectl argo rollouts retry rollout {spec.name} -n "
                    f"{spec.namespace}"
                )
            return CheckResult(
                Status.FAILED,
                f"{where} is Degraded: {message or 'no message'} (expected {expected})",
                hint=hint,
                evidence=evidence,
            )
        if phase == "Paused":
            duration = _timed_pause(rollout)
            if duration:
                return CheckResult(
                    Status.PENDING,
                    f"{where} is {summary}: a pause of {duration} that ends by itself "
                    f"(expected {expected})",
                    hint=get_hint,
                    evidence=evidence,
                )
            return CheckResult(
                Status.FAILED,
                f"{where} is {summary}: it waits for a promotion (expected {expected})",
                hint=_promote_hint(spec.name, spec.namespace),
                evidence=evidence,
            )
        if phase == "Healthy":
            return CheckResult(
                Status.FAILED,
                f"{where} is Healthy: no update is in progress (expected {expected}); "
                "change its pod template (e.g. kubectl argo rollouts set image) to start one",
                hint=get_hint,
                evidence=evidence,
            )
        return CheckResult(
            Status.FAILED,
            f"{where} is {summary}, expected {expected}",
            hint=get_hint,
            evidence=evidence,
        )

    problems = _rollout_problems(spec, ctx, rollout, weight, evidence)
    if problems and phase == "Progressing":
        return CheckResult(
            Status.PENDING,
            f"{where} is {summary}; not yet: " + "; ".join(problems),
            hint=get_hint,
            evidence=evidence,
        )
    passed = f"{where} is {summary}"
    if spec.canary_weight is not None:
        passed += f", canary weight {weight}%"
    if spec.stable_tag:
        passed += f", stable {evidence.get('stable_image')}"
    hint = get_hint
    if spec.paused is False and is_paused(rollout):
        hint = _promote_hint(spec.name, spec.namespace)
    if problems:
        problems[0] = f"{where} is {summary}, but {problems[0]}"
    return CheckResult.from_problems(problems, passed, hint=hint, evidence=evidence)


def _rollout_problems(
    spec: types.RolloutStatus,
    ctx: CheckContext,
    rollout: dict[str, Any],
    weight: int | None,
    evidence: dict[str, Any],
) -> list[str]:
    status = rollout.get("status") or {}
    problems = []
    if spec.step is not None:
        index = status.get("currentStepIndex")
        if _strategy(rollout) != "canary":
            problems.append("it uses the blueGreen strategy, which has no steps")
        elif index != spec.step:
            shown = index if isinstance(index, int) else "none"
            problems.append(f"it is at step {shown}, expected step {spec.step}")
    if spec.paused is not None and is_paused(rollout) != spec.paused:
        problems.append(
            f"it is paused ({_pause_text(rollout)}), expected it not paused"
            if spec.paused is False
            else "it is not paused, expected it to wait for a promotion"
        )
    if spec.canary_weight is not None:
        if weight is None:
            problems.append("it uses the blueGreen strategy, which has no canary weight")
        elif weight != spec.canary_weight:
            problems.append(f"the canary weight is {weight}%, expected {spec.canary_weight}%")
    if spec.stable_tag:
        stable = str(status.get("stableRS") or "")
        rs = _replicasets(ctx, spec.namespace, spec.name).get(stable) if stable else None
        if not stable:
            problems.append("it has no stable ReplicaSet yet (status.stableRS is empty)")
        elif rs is None:
            problems.append(f"its stable ReplicaSet (pod hash {stable}) does not exist")
        else:
            image = first_image(rs) or "(no image)"
            evidence["stable_image"] = image
            if image_tag(image) != spec.stable_tag:
                problems.append(
                    f"the stable {_rs_text(rs)} runs tag {image_tag(image)}, expected "
                    f"{spec.stable_tag}"
                )
    return problems


# -- Argo Rollouts: Services -------------------------------------------------------------------

_SERVICE_FIELDS = (
    ("blueGreen", "activeService"),
    ("blueGreen", "previewService"),
    ("canary", "canaryService"),
    ("canary", "stableService"),
)


def rollout_service_refs(rollout: dict[str, Any]) -> dict[str, str]:
    """Which Services the Rollout names: field (e.g. ``previewService``) -> Service name."""
    strategy = _dig(rollout, "spec", "strategy") or {}
    refs = {}
    for part, field in _SERVICE_FIELDS:
        value = _dig(strategy, part, field)
        if value:
            refs[field] = str(value)
    return refs


@implements(types.RolloutServices)
def rollout_services(spec: types.RolloutServices, ctx: CheckContext) -> CheckResult:
    where = f"Rollout {spec.namespace}/{spec.rollout}"
    get_hint = f"kubectl argo rollouts get rollout {spec.rollout} -n {spec.namespace}"
    rollout = ctx.kube.get(ROLLOUTS_API, "Rollout", spec.rollout, spec.namespace)
    if rollout is None:
        return CheckResult(
            Status.FAILED,
            f"{where} does not exist",
            hint=f"kubectl get rollouts -n {spec.namespace}",
            evidence={"expected": spec.expect},
        )
    phase, message = rollout_phase(rollout)
    refs = rollout_service_refs(rollout)
    named = {svc: field for field, svc in refs.items()}
    replicasets = _replicasets(ctx, spec.namespace, spec.rollout)
    problems: list[str] = []
    waiting = False  # a Service the controller has yet to take over
    selected: dict[str, Any] = {}
    facts = []
    for name, want in spec.expect.items():
        service = ctx.kube.get("v1", "Service", name, spec.namespace)
        if service is None:
            problems.append(f"Service {name} does not exist")
            continue
        selector = _dig(service, "spec", "selector") or {}
        pod_hash = selector.get(POD_HASH_LABEL)
        if not pod_hash:
            selected[name] = None
            if name in named:
                waiting = True
                problems.append(
                    f"Service {name} has no {POD_HASH_LABEL} in its selector yet: the Rollout "
                    f"names it as {named[name]} but Argo Rollouts has not taken it over"
                )
            else:
                names = ", ".join(f"{f}: {s}" for f, s in refs.items()) or "none"
                problems.append(
                    f"Service {name} is not managed by Argo Rollouts (its selector has no "
                    f"{POD_HASH_LABEL}); is it named in the Rollout's activeService, "
                    f"previewService, canaryService or stableService? (the Rollout names "
                    f"{names})"
                )
            continue
        rs = replicasets.get(str(pod_hash))
        if rs is None:
            selected[name] = {"pod_hash": pod_hash}
            problems.append(
                f"Service {name} selects pod hash {pod_hash}, but no ReplicaSet of {where} has it"
            )
            continue
        image = first_image(rs) or "(no image)"
        selected[name] = {"pod_hash": pod_hash, "replicaset": _name(rs), "image": image}
        facts.append(f"{name} -> {_name(rs)} ({image})")
        if image_tag(image) != want:
            problems.append(
                f"Service {name} selects {_rs_text(rs)}, tag {image_tag(image)}; expected "
                f"tag {want}"
            )
    evidence = {
        "phase": phase,
        "expected": spec.expect,
        "selected": selected,
        "rollout_services": refs,
    }
    if problems and (waiting or phase in ("", "Progressing")):
        return CheckResult(
            Status.PENDING,
            f"{where} is {phase or 'not processed yet'}"
            + (f" ({message})" if message else "")
            + "; not yet: "
            + "; ".join(problems),
            hint=get_hint,
            evidence=evidence,
        )
    if problems:
        problems.append(f"the Rollout is {_rollout_summary(rollout, phase, message)}")
    return CheckResult.from_problems(
        problems,
        "Services select " + ", ".join(facts),
        hint=f"{get_hint}; kubectl get service -n {spec.namespace} -o wide",
        evidence=evidence,
    )


# -- Argo Rollouts: AnalysisRuns ---------------------------------------------------------------


def _template_names(analysis: Any) -> list[str]:
    templates = _dig(analysis, "templates") or []
    return [str(t.get("templateName")) for t in templates if isinstance(t, dict)]


def template_origins(rollout: dict[str, Any], template: str) -> list[tuple[str, dict[str, str]]]:
    """Where the Rollout runs AnalysisTemplate ``template``: a description and the labels
    the AnalysisRuns created there carry (``rollout-type``, ``step-index``)."""
    strategy = _dig(rollout, "spec", "strategy") or {}
    origins: list[tuple[str, dict[str, str]]] = []
    for field, run_type in (
        ("prePromotionAnalysis", "PrePromotion"),
        ("postPromotionAnalysis", "PostPromotion"),
    ):
        if template in _template_names(_dig(strategy, "blueGreen", field)):
            origins.append((field, {ROLLOUT_TYPE_LABEL: run_type}))
    if template in _template_names(_dig(strategy, "canary", "analysis")):
        origins.append(("background analysis", {ROLLOUT_TYPE_LABEL: "Background"}))
    for index, step in enumerate(_steps(rollout)):
        if template in _template_names(step.get("analysis")):
            labels = {ROLLOUT_TYPE_LABEL: "Step", STEP_INDEX_LABEL: str(index)}
            origins.append((f"step {index}", labels))
    return origins


def _metric_names(obj: dict[str, Any] | None) -> set[str]:
    metrics = _dig(obj, "spec", "metrics") or []
    return {str(m.get("name")) for m in metrics if isinstance(m, dict)}


def _run_order(run: dict[str, Any]) -> tuple[int, datetime, str]:
    # The Rollout's revision first: a run of a newer revision is newer, whatever the
    # creation times say (they have one-second precision, so runs created around a second
    # boundary could otherwise swap); then creation time, then name.
    revision = str((_meta(run).get("annotations") or {}).get(REVISION_ANNOTATION) or "")
    return (
        int(revision) if revision.isdigit() else 0,
        parse_time(_meta(run).get("creationTimestamp")),
        _name(run),
    )


def _conditions(run: dict[str, Any]) -> dict[str, str]:
    conditions = {}
    for metric in _dig(run, "spec", "metrics") or []:
        if not isinstance(metric, dict):
            continue
        parts = []
        if metric.get("successCondition"):
            parts.append(f"successCondition {metric['successCondition']}")
        if metric.get("failureCondition"):
            parts.append(f"failureCondition {metric['failureCondition']}")
        conditions[str(metric.get("name"))] = ", ".join(parts)
    return conditions


def describe_metrics(run: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """One line per metric result, and the same as data (with whether its last measurement
    failed on an empty query result, or returned NaN)."""
    conditions = _conditions(run)
    lines, data = [], []
    for result in _dig(run, "status", "metricResults") or []:
        if not isinstance(result, dict):
            continue
        name = str(result.get("name"))
        measurements = [m for m in result.get("measurements") or [] if isinstance(m, dict)]
        last = measurements[-1] if measurements else {}
        value = last.get("value")
        text = str(last.get("message") or result.get("message") or "")
        line = f"metric {name} {result.get('phase') or 'Pending'}"
        nan = value not in (None, "") and "nan" in str(value).lower()
        empty = bool(text) and bool(_EMPTY_RESULT.search(text))
        if value not in (None, ""):
            line += f", value {value}"
        if text:
            line += f", {text!r}"
        counts = [
            f"{result[k]} {k}"
            for k in ("successful", "failed", "inconclusive", "error")
            if result.get(k)
        ]
        if counts:
            line += f" ({_plural(int(result.get('count') or 0), 'measurement')}: "
            line += ", ".join(counts) + ")"
        if conditions.get(name):
            line += f" [{conditions[name]}]"
        lines.append(line)
        data.append(
            {
                "name": name,
                "phase": result.get("phase"),
                "value": value,
                "message": text or None,
                "count": result.get("count"),
                "successful": result.get("successful"),
                "failed": result.get("failed"),
                "error": result.get("error"),
                "empty_result": empty,
                "nan": nan,
            }
        )
    return lines, data


EMPTY_NOTE = (
    "the query returned no data (an empty result: no requests in its time window yet), so "
    "its condition could not index result[0]; the lesson's queries guard against this "
    "(`... or vector(0)`, `scalar(...)`), and traffic must flow while the analysis runs"
)
NAN_NOTE = (
    "NaN is 0/0: there were no requests in the query's time window; "
    "send traffic while the analysis runs"
)


@implements(types.AnalysisRunResult)
def analysisrun_result(spec: types.AnalysisRunResult, ctx: CheckContext) -> CheckResult:
    where = f"Rollout {spec.namespace}/{spec.rollout}"
    get_hint = f"kubectl argo rollouts get rollout {spec.rollout} -n {spec.namespace}"
    rollout = ctx.kube.get(ROLLOUTS_API, "Rollout", spec.rollout, spec.namespace)
    evidence: dict[str, Any] = {"expected": spec.expect, "template": spec.template}
    if rollout is None:
        return CheckResult(
            Status.FAILED,
            f"{where} does not exist",
            hint=f"kubectl get rollouts -n {spec.namespace}",
            evidence=evidence,
        )
    runs = [
        r
        for r in ctx.kube.list(ROLLOUTS_API, "AnalysisRun", spec.namespace)
        if _owned_by(r, "Rollout", spec.rollout)
    ]
    of_template = ""
    template: dict[str, Any] | None = None
    if spec.template:
        of_template = f" of AnalysisTemplate {spec.template}"
        template = ctx.kube.get(ROLLOUTS_API, "AnalysisTemplate", spec.template, spec.namespace)
        origins = template_origins(rollout, spec.template)
        evidence["origins"] = [o for o, _ in origins]
        if origins:
            runs = [
                r
                for r in runs
                if any(
                    all((_meta(r).get("labels") or {}).get(k) == v for k, v in labels.items())
                    for _, labels in origins
                )
            ]
        else:
            # Not (or no longer) referenced by the Rollout: recognise its runs by the
            # template's metrics, which the run copies.
            names = _metric_names(template)
            runs = [r for r in runs if names and names <= _metric_names(r)]
            if not runs:
                used = sorted(
                    {
                        name
                        for field in ("prePromotionAnalysis", "postPromotionAnalysis")
                        for name in _template_names(
                            _dig(rollout, "spec", "strategy", "blueGreen", field)
                        )
                    }
                    | set(_template_names(_dig(rollout, "spec", "strategy", "canary", "analysis")))
                    | {n for s in _steps(rollout) for n in _template_names(s.get("analysis"))}
                )
                missing = "" if template is not None else " (and it does not exist)"
                return CheckResult(
                    Status.FAILED,
                    f"{where} does not use AnalysisTemplate {spec.template}{missing}; it uses "
                    f"{', '.join(used) or 'no AnalysisTemplate'}",
                    hint=f"kubectl get rollout {spec.rollout} -n {spec.namespace} -o yaml",
                    evidence=evidence,
                )
    if not runs:
        where_run = ""
        if evidence.get("origins"):
            where_run = f" ({', '.join(evidence['origins'])})"
        return CheckResult(
            Status.PENDING,
            f"no AnalysisRun{of_template} of {where} yet: the rollout has not reached its "
            f"analysis step{where_run}",
            hint=get_hint,
            evidence=evidence,
        )
    run = max(runs, key=_run_order)
    name = _name(run)
    run_phase = str(_dig(run, "status", "phase") or "")
    run_message = str(_dig(run, "status", "message") or "")
    lines, metrics = describe_metrics(run)
    labels = _meta(run).get("labels") or {}
    head = f"AnalysisRun {name}{of_template} is {run_phase or 'Pending'}"
    if run_message:
        head += f" ({run_message})"
    # One run may measure several templates (a Rollout listing two templates in one
    # analysis gets one run with the metrics of both): judge only this template's metrics.
    phase, own = run_phase, metrics
    if spec.template:
        names = _metric_names(template)
        if names and _metric_names(run) - names:
            own = [m for m in metrics if m["name"] in names]
            phase = _template_phase(run_phase, [m["phase"] for m in own], len(names))
            head = (
                f"AnalysisRun {name} is {run_phase or 'Pending'}"
                + (f" ({run_message})" if run_message else "")
                + f"; its metrics from AnalysisTemplate {spec.template} "
                f"({', '.join(sorted(names))}) are {phase or 'Pending'}"
            )
    evidence.update(
        {
            "analysisrun": name,
            "phase": phase,
            "run_phase": run_phase,
            "message": run_message,
            "rollout_type": labels.get(ROLLOUT_TYPE_LABEL),
            "metrics": metrics,
            "empty_result": any(m["empty_result"] for m in own),
        }
    )
    describe = f"kubectl describe analysisrun {name} -n {spec.namespace}"
    body = "; ".join(lines) if lines else "no measurements yet"
    notes = [EMPTY_NOTE] if any(m["empty_result"] for m in own) else []
    notes += [NAN_NOTE] if any(m["nan"] for m in own) else []
    text = "; ".join([f"{head}: {body}", *notes])
    if phase in ("", "Pending", "Running"):
        return CheckResult(Status.PENDING, text, hint=f"{describe}; {get_hint}", evidence=evidence)
    if phase == spec.expect:
        if (
            phase == "Successful"
            and _dig(run, "spec", "terminate")
            and not any(m.get("count") for m in own)
        ):
            return CheckResult(
                Status.FAILED,
                f"{text}; it was stopped before it measured anything (the rollout was "
                "promoted or aborted past it), so nothing was analysed",
                hint=get_hint,
                evidence=evidence,
            )
        return CheckResult(Status.PASSED, text, evidence=evidence)
    why = _WHY_NOT.get((spec.expect, phase))
    return CheckResult(
        Status.FAILED,
        f"{text}; expected {spec.expect}" + (f": {why}" if why else ""),
        hint=f"{describe}; {get_hint}",
        evidence=evidence,
    )


# Completed phases from best to worst, as Argo Rollouts ranks them (analysisStatusOrder).
_PHASE_ORDER = ("Successful", "Inconclusive", "Error", "Failed")


def _template_phase(run_phase: str, phases: list[Any], expected: int) -> str:
    """The phase of one template's metrics within a run: running while any of them is,
    else the worst of them."""
    done = [str(p) for p in phases if p in _PHASE_ORDER]
    if len(done) < expected:
        # Not all measured yet; a finished run (ended early by another metric) has its say.
        return run_phase if run_phase in _PHASE_ORDER else "Running"
    return max(done, key=_PHASE_ORDER.index)


# (expected, got) -> what it means for the student.
_WHY_NOT = {
    ("Successful", "Failed"): "a metric missed its successCondition",
    ("Successful", "Error"): "a metric could not be measured",
    ("Successful", "Inconclusive"): (
        "the result was neither a success nor a failure and the rollout paused: promote or abort it"
    ),
    ("Failed", "Successful"): (
        "the analysis passed, but this exercise wants it to fail: send failing requests "
        "(e.g. /status/500) while the analysis runs"
    ),
    ("Failed", "Error"): "an Error is not a Failed (a metric could not be measured at all)",
}
