#!/usr/bin/env bash
# Exercise 7: ask `canary-analysis` for v2 and let it go: every step waits, runs the success-rate
# analysis on the canary's pods and only then moves on; it ends Healthy on v2.
source "$(dirname "$0")/lib.sh"

rollout=canary-analysis
if [ "$(stable_tag $rollout)" = v2 ] && [ "$(phase $rollout)" = Healthy ]; then
  say "rollout/$rollout already runs v2"
  exit 0
fi
if [ "$(field $rollout '{.status.abort}')" = "true" ]; then reset_to $rollout v1; fi
set_tag $rollout v2
wait_phase $rollout Healthy
kubectl get analysisruns -n "$NS" -l app=$rollout
