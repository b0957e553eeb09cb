"""Checks of Argo Rollouts: rollout-status, rollout-services, analysisrun-result.

What is read (Argo Rollouts v1.8 source, unchanged in the v1.9 the catalog installs):
``status.phase``/``message`` of the Rollout (Healthy, Progressing, Paused, Degraded; read
as ``kubectl argo rollouts`` does, see :func:`rollout_phase`), the label
``rollouts-pod-template-hash`` on its ReplicaSets and in the selectors of the Services it
manages, and AnalysisRuns owned by the Rollout, labelled ``rollout-type`` (PrePromotion,
PostPromotion, Background, Step) and ``step-index``. An AnalysisRun does not record which
AnalysisTemplate it came from (its name is ``<rollout>-<pod hash>-<revision>[-<step or
pre/post>]``), so runs of one template are found through where the Rollout references
that template.

``pending`` means the controller is still moving (an analysis running, a rollout
progressing, a new revision not picked up yet); ``failed`` means the state is wrong and
will not fix itself.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from kubelab.checks import types
from kubelab.checks.objects import (
    _name,
    _one_of,
    _owned_by,
    first_image,
    image_tag,
    parse_time,
)
from kubelab.checks.registry import CheckContext, implements
from kubelab.checks.result import CheckResult, Status
from kubelab.i18n import _
from kubelab.k8s.objects import dig
from kubelab.k8s.objects import meta as meta_of

ROLLOUTS_API = "argoproj.io/v1alpha1"
POD_HASH_LABEL = "rollouts-pod-template-hash"
ROLLOUT_TYPE_LABEL = "rollout-type"
STEP_INDEX_LABEL = "step-index"
REVISION_ANNOTATION = "rollout.argoproj.io/revision"
# What a measurement says when its query returned an empty vector and the condition indexed
# it: Argo Rollouts v1.8 (expr panics in reflect) and, from v1.10, its own wording.
_EMPTY_RESULT = re.compile(
    r"index out of range|metric result is nil or empty|no data returned", re.IGNORECASE
)


def rollout_phase(rollout: dict[str, Any]) -> tuple[str, str]:
    """Phase and message as ``kubectl argo rollouts get`` shows them.

    Mirrors Argo Rollouts' ``GetRolloutPhase``: a spec change the controller has not
    observed yet (``status.observedGeneration`` behind ``metadata.generation``) and a
    promotion not reacted to yet (``controllerPause`` without pause conditions) are
    Progressing whatever the stored phase says.
    """
    status = rollout.get("status") or {}
    observed = str(status.get("observedGeneration") or "")
    generation = meta_of(rollout).get("generation")
    if observed.isdigit() and isinstance(generation, int) and int(observed) < generation:
        return "Progressing", "waiting for rollout spec update to be observed"
    if status.get("controllerPause") and not status.get("pauseConditions"):
        return "Progressing", "waiting for rollout to unpause"
    return str(status.get("phase") or ""), str(status.get("message") or "")


def _strategy(rollout: dict[str, Any]) -> str:
    strategy = dig(rollout, "spec", "strategy") or {}
    return "blueGreen" if strategy.get("blueGreen") else "canary"


def _steps(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    steps = dig(rollout, "spec", "strategy", "canary", "steps") or []
    return [s if isinstance(s, dict) else {} for s in steps]


def canary_weight(rollout: dict[str, Any]) -> tuple[int | None, str]:
    """The canary's traffic weight and where it comes from.

    With traffic routing Argo Rollouts records what it set in ``status.canary.weights``;
    otherwise it is the last ``setWeight`` at or before the current step (Argo Rollouts'
    ``GetCurrentSetWeight``: 0 once aborted, 100 after the last step).
    """
    status = rollout.get("status") or {}
    recorded = dig(status, "canary", "weights", "canary", "weight")
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
        pod_hash = (meta_of(rs).get("labels") or {}).get(POD_HASH_LABEL)
        if not pod_hash:
            continue
        # Owned ones win over a stray ReplicaSet carrying the same label value.
        if _owned_by(rs, "Rollout", rollout) or pod_hash not in by_hash:
            by_hash[str(pod_hash)] = rs
    return by_hash


def _rs_text(rs: dict[str, Any]) -> str:
    image = first_image(rs) or _("no image")
    return f"ReplicaSet {_name(rs)} ({image})"


def _pause_text(rollout: dict[str, Any]) -> str:
    status = rollout.get("status") or {}
    reasons = [
        str(c.get("reason"))
        for c in status.get("pauseConditions") or []
        if isinstance(c, dict) and c.get("reason")
    ]
    if dig(rollout, "spec", "paused"):
        reasons.append("spec.paused")
    return ", ".join(reasons)


def is_paused(rollout: dict[str, Any]) -> bool:
    """Waiting for a promotion: pause conditions set, or paused by hand (``spec.paused``)."""
    return bool(dig(rollout, "status", "pauseConditions")) or bool(dig(rollout, "spec", "paused"))


def _timed_pause(rollout: dict[str, Any]) -> str | None:
    """The duration of the pause step the rollout is on, if it ends by itself."""
    index = dig(rollout, "status", "currentStepIndex")
    steps = _steps(rollout)
    if dig(rollout, "spec", "paused") or not isinstance(index, int) or index >= len(steps):
        return None
    duration = dig(steps[index], "pause", "duration")
    if duration in (None, "", 0):
        return None
    # An integer (or a string without a unit) is seconds, as Argo Rollouts reads it.
    return f"{duration}s" if str(duration).isdigit() else str(duration)


def _rollout_summary(rollout: dict[str, Any], phase: str, message: str) -> str:
    status = rollout.get("status") or {}
    text = phase or _("(no phase yet)")
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
        text = _("{summary} at step {step} of {steps}").format(
            summary=text, step=index, steps=len(_steps(rollout))
        )
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
            _("{where} does not exist (expected it {expected})").format(
                where=where, expected=_one_of(wanted)
            ),
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
                _("{where} is {summary}; not {expected} yet").format(
                    where=where, summary=summary, expected=expected
                ),
                hint=get_hint,
                evidence=evidence,
            )
        if phase == "Degraded":
            hint = get_hint
            if status.get("abort"):
                hint = _(
                    "{hint}; kubectl get analysisrun -n {namespace} (why it aborted); after "
                    "fixing it: kubectl argo rollouts retry rollout {name} -n {namespace}"
                ).format(hint=get_hint, namespace=spec.namespace, name=spec.name)
            return CheckResult(
                Status.FAILED,
                _("{where} is Degraded: {message} (expected {expected})").format(
                    where=where, message=message or _("no message"), expected=expected
                ),
                hint=hint,
                evidence=evidence,
            )
        if phase == "Paused":
            duration = _timed_pause(rollout)
            if duration:
                return CheckResult(
                    Status.PENDING,
                    _(
                        "{where} is {summary}: a pause of {duration} that ends by itself "
                        "(expected {expected})"
                    ).format(where=where, summary=summary, duration=duration, expected=expected),
                    hint=get_hint,
                    evidence=evidence,
                )
            return CheckResult(
                Status.FAILED,
                _("{where} is {summary}: it waits for a promotion (expected {expected})").format(
                    where=where, summary=summary, expected=expected
                ),
                hint=_promote_hint(spec.name, spec.namespace),
                evidence=evidence,
            )
        if phase == "Healthy":
            return CheckResult(
                Status.FAILED,
                _(
                    "{where} is Healthy: no update is in progress (expected {expected}); "
                    "change its pod template (e.g. kubectl argo rollouts set image) to start one"
                ).format(where=where, expected=expected),
                hint=get_hint,
                evidence=evidence,
            )
        return CheckResult(
            Status.FAILED,
            _("{where} is {summary}, expected {expected}").format(
                where=where, summary=summary, expected=expected
            ),
            hint=get_hint,
            evidence=evidence,
        )

    problems = _rollout_problems(spec, ctx, rollout, weight, evidence)
    if problems and phase == "Progressing":
        return CheckResult(
            Status.PENDING,
            _("{where} is {summary}; not yet: {problems}").format(
                where=where, summary=summary, problems="; ".join(problems)
            ),
            hint=get_hint,
            evidence=evidence,
        )
    passed = _("{where} is {summary}").format(where=where, summary=summary)
    if spec.canary_weight is not None:
        passed = _("{passed}, canary weight {weight}%").format(passed=passed, weight=weight)
    if spec.stable_tag:
        passed = _("{passed}, stable {image}").format(
            passed=passed, image=evidence.get("stable_image")
        )
    hint = get_hint
    if spec.paused is False and is_paused(rollout):
        hint = _promote_hint(spec.name, spec.namespace)
    if problems:
        problems[0] = _("{where} is {summary}, but {problem}").format(
            where=where, summary=summary, problem=problems[0]
        )
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
            problems.append(_("it uses the blueGreen strategy, which has no steps"))
        elif index != spec.step:
            shown = index if isinstance(index, int) else _("none")
            problems.append(
                _("it is at step {step}, expected step {expected}").format(
                    step=shown, expected=spec.step
                )
            )
    if spec.paused is not None and is_paused(rollout) != spec.paused:
        problems.append(
            _("it is paused ({reasons}), expected it not paused").format(
                reasons=_pause_text(rollout)
            )
            if spec.paused is False
            else _("it is not paused, expected it to wait for a promotion")
        )
    if spec.canary_weight is not None:
        if weight is None:
            problems.append(_("it uses the blueGreen strategy, which has no canary weight"))
        elif weight != spec.canary_weight:
            problems.append(
                _("the canary weight is {weight}%, expected {expected}%").format(
                    weight=weight, expected=spec.canary_weight
                )
            )
    if spec.stable_tag:
        stable = str(status.get("stableRS") or "")
        rs = _replicasets(ctx, spec.namespace, spec.name).get(stable) if stable else None
        if not stable:
            problems.append(_("it has no stable ReplicaSet yet (status.stableRS is empty)"))
        elif rs is None:
            problems.append(
                _("its stable ReplicaSet (pod hash {pod_hash}) does not exist").format(
                    pod_hash=stable
                )
            )
        else:
            image = first_image(rs)
            evidence["stable_image"] = image or "(no image)"  # data: the same in every language
            tag = image_tag(image or "")
            if tag != spec.stable_tag:
                problems.append(
                    _("the stable {replicaset} runs tag {tag}, expected {expected}").format(
                        replicaset=_rs_text(rs), tag=tag, expected=spec.stable_tag
                    )
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
    strategy = dig(rollout, "spec", "strategy") or {}
    refs = {}
    for part, field in _SERVICE_FIELDS:
        value = dig(strategy, part, field)
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
            _("{where} does not exist").format(where=where),
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
            problems.append(_("Service {name} does not exist").format(name=name))
            continue
        selector = dig(service, "spec", "selector") or {}
        pod_hash = selector.get(POD_HASH_LABEL)
        if not pod_hash:
            selected[name] = None
            if name in named:
                waiting = True
                problems.append(
                    _(
                        "Service {name} has no {label} in its selector yet: the Rollout "
                        "names it as {field} but Argo Rollouts has not taken it over"
                    ).format(name=name, label=POD_HASH_LABEL, field=named[name])
                )
            else:
                names = ", ".join(f"{f}: {s}" for f, s in refs.items()) or _("none")
                problems.append(
                    _(
                        "Service {name} is not managed by Argo Rollouts (its selector has no "
                        "{label}); is it named in the Rollout's activeService, "
                        "previewService, canaryService or stableService? (the Rollout names "
                        "{names})"
                    ).format(name=name, label=POD_HASH_LABEL, names=names)
                )
            continue
        rs = replicasets.get(str(pod_hash))
        if rs is None:
            selected[name] = {"pod_hash": pod_hash}
            problems.append(
                _(
                    "Service {name} selects pod hash {pod_hash}, but no ReplicaSet of {where} "
                    "has it"
                ).format(name=name, pod_hash=pod_hash, where=where)
            )
            continue
        image = first_image(rs)
        selected[name] = {
            "pod_hash": pod_hash,
            "replicaset": _name(rs),
            "image": image or "(no image)",  # data: the same in every language
        }
        shown = image or _("(no image)")
        facts.append(f"{name} -> {_name(rs)} ({shown})")
        tag = image_tag(image or "")
        if tag != want:
            problems.append(
                _("Service {name} selects {replicaset}, tag {tag}; expected tag {expected}").format(
                    name=name, replicaset=_rs_text(rs), tag=tag, expected=want
                )
            )
    evidence = {
        "phase": phase,
        "expected": spec.expect,
        "selected": selected,
        "rollout_services": refs,
    }
    if problems and (waiting or phase in ("", "Progressing")):
        state = phase or _("not processed yet")
        if message:
            state += f" ({message})"
        return CheckResult(
            Status.PENDING,
            _("{where} is {summary}; not yet: {problems}").format(
                where=where, summary=state, problems="; ".join(problems)
            ),
            hint=get_hint,
            evidence=evidence,
        )
    if problems:
        problems.append(
            _("the Rollout is {summary}").format(summary=_rollout_summary(rollout, phase, message))
        )
    return CheckResult.from_problems(
        problems,
        _("Services select {services}").format(services=", ".join(facts)),
        hint=f"{get_hint}; kubectl get service -n {spec.namespace} -o wide",
        evidence=evidence,
    )


# -- Argo Rollouts: AnalysisRuns ---------------------------------------------------------------


def _template_names(analysis: Any) -> list[str]:
    templates = dig(analysis, "templates") or []
    return [str(t.get("templateName")) for t in templates if isinstance(t, dict)]


def template_origins(rollout: dict[str, Any], template: str) -> list[tuple[str, dict[str, str]]]:
    """Where the Rollout runs AnalysisTemplate ``template``: a description and the labels
    the AnalysisRuns created there carry (``rollout-type``, ``step-index``)."""
    strategy = dig(rollout, "spec", "strategy") or {}
    origins: list[tuple[str, dict[str, str]]] = []
    for field, run_type in (
        ("prePromotionAnalysis", "PrePromotion"),
        ("postPromotionAnalysis", "PostPromotion"),
    ):
        if template in _template_names(dig(strategy, "blueGreen", field)):
            origins.append((field, {ROLLOUT_TYPE_LABEL: run_type}))
    if template in _template_names(dig(strategy, "canary", "analysis")):
        origins.append((_("background analysis"), {ROLLOUT_TYPE_LABEL: "Background"}))
    for index, step in enumerate(_steps(rollout)):
        if template in _template_names(step.get("analysis")):
            labels = {ROLLOUT_TYPE_LABEL: "Step", STEP_INDEX_LABEL: str(index)}
            origins.append((_("step {index}").format(index=index), labels))
    return origins


def _metric_names(obj: dict[str, Any] | None) -> set[str]:
    metrics = dig(obj, "spec", "metrics") or []
    return {str(m.get("name")) for m in metrics if isinstance(m, dict)}


def _run_order(run: dict[str, Any]) -> tuple[int, datetime, str]:
    # The Rollout's revision first: a run of a newer revision is newer, whatever the
    # creation times say (they have one-second precision, so runs created around a second
    # boundary could otherwise swap); then creation time, then name.
    revision = str((meta_of(run).get("annotations") or {}).get(REVISION_ANNOTATION) or "")
    return (
        int(revision) if revision.isdigit() else 0,
        parse_time(meta_of(run).get("creationTimestamp")),
        _name(run),
    )


def _conditions(run: dict[str, Any]) -> dict[str, str]:
    conditions = {}
    for metric in dig(run, "spec", "metrics") or []:
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
    for result in dig(run, "status", "metricResults") or []:
        if not isinstance(result, dict):
            continue
        name = str(result.get("name"))
        measurements = [m for m in result.get("measurements") or [] if isinstance(m, dict)]
        last = measurements[-1] if measurements else {}
        value = last.get("value")
        text = str(last.get("message") or result.get("message") or "")
        line = _("metric {name} {phase}").format(name=name, phase=result.get("phase") or "Pending")
        nan = value not in (None, "") and "nan" in str(value).lower()
        empty = bool(text) and bool(_EMPTY_RESULT.search(text))
        if value not in (None, ""):
            line = _("{line}, value {value}").format(line=line, value=value)
        if text:
            line += f", {text!r}"
        counts = [
            f"{result[k]} {k}"
            for k in ("successful", "failed", "inconclusive", "error")
            if result.get(k)
        ]
        if counts:
            count = int(result.get("count") or 0)
            measured = (
                _("{count} measurement") if count == 1 else _("{count} measurements")
            ).format(count=count)
            line += f" ({measured}: {', '.join(counts)})"
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


def _empty_note() -> str:
    return _(
        "the query returned no data (an empty result: no requests in its time window yet), so "
        "its condition could not index result[0]; the lesson's queries guard against this "
        "(`... or vector(0)`, `scalar(...)`), and traffic must flow while the analysis runs"
    )


def _nan_note() -> str:
    return _(
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
            _("{where} does not exist").format(where=where),
            hint=f"kubectl get rollouts -n {spec.namespace}",
            evidence=evidence,
        )
    runs = [
        r
        for r in ctx.kube.list(ROLLOUTS_API, "AnalysisRun", spec.namespace)
        if _owned_by(r, "Rollout", spec.rollout)
    ]
    template: dict[str, Any] | None = None
    if spec.template:
        template = ctx.kube.get(ROLLOUTS_API, "AnalysisTemplate", spec.template, spec.namespace)
        origins = template_origins(rollout, spec.template)
        evidence["origins"] = [o for o, _unused in origins]
        if origins:
            runs = [
                r
                for r in runs
                if any(
                    all((meta_of(r).get("labels") or {}).get(k) == v for k, v in labels.items())
                    for _unused, labels in origins
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
                            dig(rollout, "spec", "strategy", "blueGreen", field)
                        )
                    }
                    | set(_template_names(dig(rollout, "spec", "strategy", "canary", "analysis")))
                    | {n for s in _steps(rollout) for n in _template_names(s.get("analysis"))}
                )
                unused = (
                    _("{where} does not use AnalysisTemplate {template}; it uses {used}")
                    if template is not None
                    else _(
                        "{where} does not use AnalysisTemplate {template} (and it does not "
                        "exist); it uses {used}"
                    )
                )
                return CheckResult(
                    Status.FAILED,
                    unused.format(
                        where=where,
                        template=spec.template,
                        used=", ".join(used) or _("no AnalysisTemplate"),
                    ),
                    hint=f"kubectl get rollout {spec.rollout} -n {spec.namespace} -o yaml",
                    evidence=evidence,
                )
    if not runs:
        where_run = ""
        if evidence.get("origins"):
            where_run = f" ({', '.join(evidence['origins'])})"
        none_yet = (
            _(
                "no AnalysisRun of AnalysisTemplate {template} of {where} yet: the rollout has "
                "not reached its analysis step{origins}"
            )
            if spec.template
            else _(
                "no AnalysisRun of {where} yet: the rollout has not reached its analysis "
                "step{origins}"
            )
        )
        return CheckResult(
            Status.PENDING,
            none_yet.format(template=spec.template, where=where, origins=where_run),
            hint=get_hint,
            evidence=evidence,
        )
    run = max(runs, key=_run_order)
    name = _name(run)
    run_phase = str(dig(run, "status", "phase") or "")
    run_message = str(dig(run, "status", "message") or "")
    lines, metrics = describe_metrics(run)
    labels = meta_of(run).get("labels") or {}
    head = (
        _("AnalysisRun {name} of AnalysisTemplate {template} is {phase}")
        if spec.template
        else _("AnalysisRun {name} is {phase}")
    ).format(name=name, template=spec.template, phase=run_phase or "Pending")
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
            head = _("AnalysisRun {name} is {phase}").format(
                name=name, phase=run_phase or "Pending"
            )
            if run_message:
                head += f" ({run_message})"
            head = _(
                "{head}; its metrics from AnalysisTemplate {template} ({metrics}) are {phase}"
            ).format(
                head=head,
                template=spec.template,
                metrics=", ".join(sorted(names)),
                phase=phase or "Pending",
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
    body = "; ".join(lines) if lines else _("no measurements yet")
    notes = [_empty_note()] if any(m["empty_result"] for m in own) else []
    notes += [_nan_note()] if any(m["nan"] for m in own) else []
    text = "; ".join([f"{head}: {body}", *notes])
    if phase in ("", "Pending", "Running"):
        return CheckResult(Status.PENDING, text, hint=f"{describe}; {get_hint}", evidence=evidence)
    if phase == spec.expect:
        if (
            phase == "Successful"
            and dig(run, "spec", "terminate")
            and not any(m.get("count") for m in own)
        ):
            return CheckResult(
                Status.FAILED,
                _(
                    "{text}; it was stopped before it measured anything (the rollout was "
                    "promoted or aborted past it), so nothing was analysed"
                ).format(text=text),
                hint=get_hint,
                evidence=evidence,
            )
        return CheckResult(Status.PASSED, text, evidence=evidence)
    why = _why_not(spec.expect, phase)
    return CheckResult(
        Status.FAILED,
        _("{text}; expected {expected}").format(text=text, expected=spec.expect)
        + (f": {why}" if why else ""),
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


def _why_not(expected: str, got: str) -> str | None:
    """What getting phase ``got`` instead of ``expected`` means for the student."""
    texts = {
        ("Successful", "Failed"): _("a metric missed its successCondition"),
        ("Successful", "Error"): _("a metric could not be measured"),
        ("Successful", "Inconclusive"): _(
            "the result was neither a success nor a failure and the rollout paused: "
            "promote or abort it"
        ),
        ("Failed", "Successful"): _(
            "the analysis passed, but this exercise wants it to fail: send failing requests "
            "(e.g. /status/500) while the analysis runs"
        ),
        ("Failed", "Error"): _("an Error is not a Failed (a metric could not be measured at all)"),
    }
    return texts.get((expected, got))
