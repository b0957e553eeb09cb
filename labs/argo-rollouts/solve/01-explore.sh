#!/usr/bin/env bash
# Exercise 1: the four Rollouts run v1 and are Healthy; both blue/green Services select v1.
source "$(dirname "$0")/lib.sh"

for rollout in bluegreen bluegreen-analysis canary canary-analysis; do
  reset_to "$rollout" v1
  wait_phase "$rollout" Healthy
done
kubectl wait --for=condition=Ready pod/curl-test -n "$NS" --timeout=120s
kubectl get rollouts -n "$NS"
