#!/usr/bin/env bash
# Exercise 1: Flagger initialized the Canary; wait for it and look at what it generated.
source "$(dirname "$0")/lib.sh"

# Initialized right after `kubelab up`; Succeeded or Failed once later exercises ran (an
# analysis under way is waited for).
current=$(wait_phase "$FINISH_TIMEOUT" Initialized Succeeded Failed)
echo "canary/$CANARY is $current"
if [ "$current" = Failed ]; then
  echo "(the last release was rolled back, as exercise 3 does; the next release clears it)"
fi
k rollout status "deployment/$PRIMARY" --timeout=180s
k wait --for=condition=Ready "pod/$TESTER" --timeout=120s
k get deployment,service,virtualservice,destinationrule
k get canary "$CANARY" -o jsonpath='{.spec.analysis}{"\n"}'
