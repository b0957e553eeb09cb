#!/usr/bin/env bash
# Exercise 3: promote `bluegreen`: the active Service switches to v2, which becomes stable.
source "$(dirname "$0")/lib.sh"

if [ "$(stable_tag bluegreen)" = v2 ] && [ "$(phase bluegreen)" = Healthy ]; then
  say "rollout/bluegreen already runs v2"
  exit 0
fi
set_tag bluegreen v2   # the state of exercise 2, should it not be there yet
promote_until_healthy bluegreen
[ "$(stable_tag bluegreen)" = v2 ] || die "rollout/bluegreen is Healthy but its stable version is $(stable_tag bluegreen)"
kubectl get service bluegreen bluegreen-preview -n "$NS" -o wide
