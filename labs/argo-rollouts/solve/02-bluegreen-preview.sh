#!/usr/bin/env bash
# Exercise 2: ask `bluegreen` for v2; the green ReplicaSet comes up behind the preview Service and
# the Rollout pauses, the active Service still on v1.
source "$(dirname "$0")/lib.sh"

if [ "$(stable_tag bluegreen)" != v1 ]; then reset_to bluegreen v1; fi
set_tag bluegreen v2
wait_phase bluegreen Paused
kubectl exec -n "$NS" curl-test -- sh -c \
  'echo "active:  $(curl -s --max-time 2 http://bluegreen/)"; echo "preview: $(curl -s --max-time 2 http://bluegreen-preview/)"'
