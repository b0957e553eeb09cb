#!/usr/bin/env bash
# Exercise 5: ask `canary` for v2 and resume it step by step up to the pause at 25%
# (steps: setWeight 0, pause, setWeight 10, pause, setWeight 25, pause <- index 5).
source "$(dirname "$0")/lib.sh"

step=$(field canary '{.status.currentStepIndex}')
if [ "$(stable_tag canary)" != v1 ] || { [ "$(image_tag canary)" != v1 ] && [ "${step:-0}" -gt 5 ]; }; then
  reset_to canary v1   # start over: v2 is already further than this exercise
fi
set_tag canary v2
wait_paused_at canary 5
kubectl get virtualservice canary -n "$NS" \
  -o jsonpath='{range .spec.http[0].route[*]}{.destination.subset}={.weight}{" "}{end}{"\n"}'
