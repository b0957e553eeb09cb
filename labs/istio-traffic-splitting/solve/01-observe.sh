#!/usr/bin/env bash
# Exercise 1: the app is deployed with a 90/10 split; make sure of it and look at it.
source "$(dirname "$0")/lib.sh"

kubectl rollout status deployment/app-backend-v1 -n "$NS" --timeout=180s
kubectl rollout status deployment/app-backend-v2 -n "$NS" --timeout=180s
kubectl wait --for=condition=Ready pod/curl-test -n "$NS" --timeout=120s
set_weights 90 10
kubectl exec -n "$NS" curl-test -- sh -c \
  'for i in $(seq 1 10); do curl -s --max-time 1 http://app-backend/ || echo timeout; done' \
  | sort | uniq -c
