#!/usr/bin/env bash
# Exercise 2: give the pod template the label the Service selects; the Deployment replaces
# its pods with labelled ones.
source "$(dirname "$0")/lib.sh"
kubectl patch deployment web -n "$NS" --type=merge \
  -p '{"spec":{"template":{"metadata":{"labels":{"tier":"frontend"}}}}}'
kubectl rollout status deployment/web -n "$NS" --timeout=120s
