#!/usr/bin/env bash
# Exercise 6: resume `canary` through its remaining steps until v2 is stable and gets 100%.
source "$(dirname "$0")/lib.sh"

if [ "$(stable_tag canary)" = v2 ] && [ "$(phase canary)" = Healthy ]; then
  say "rollout/canary already runs v2"
  exit 0
fi
set_tag canary v2   # the start of exercise 5, should it not be there yet
promote_until_healthy canary
[ "$(stable_tag canary)" = v2 ] || die "rollout/canary is Healthy but its stable version is $(stable_tag canary)"
kubectl get virtualservice canary -n "$NS" \
  -o jsonpath='{range .spec.http[0].route[*]}{.destination.subset}={.weight}{" "}{end}{"\n"}'
