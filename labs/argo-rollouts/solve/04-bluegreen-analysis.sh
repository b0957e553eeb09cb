#!/usr/bin/env bash
# Exercise 4: ask `bluegreen-analysis` for v2; the pre-promotion analysis (load-test Job +
# success-rate query on the preview pods) must succeed before the Rollout pauses for promotion;
# then promote it.
source "$(dirname "$0")/lib.sh"

rollout=bluegreen-analysis
if [ "$(stable_tag $rollout)" = v2 ] && [ "$(phase $rollout)" = Healthy ]; then
  say "rollout/$rollout already runs v2"
  exit 0
fi
if [ "$(field $rollout '{.status.abort}')" = "true" ]; then reset_to $rollout v1; fi
set_tag $rollout v2
# Paused comes only once the analysis succeeded (a failed one aborts: Degraded; an inconclusive
# one pauses with InconclusiveAnalysis, and wait_phase stops there).
wait_phase $rollout Paused
kubectl get analysisruns -n "$NS" -l app=$rollout
promote $rollout
wait_phase $rollout Healthy
[ "$(stable_tag $rollout)" = v2 ] || die "rollout/$rollout is Healthy but its stable version is $(stable_tag $rollout)"
