#!/usr/bin/env bash
# Exercise 1, as the lesson prints it: three replicas, then wait for them.
source "$(dirname "$0")/lib.sh"
kubectl scale deployment web -n "$NS" --replicas=3
kubectl rollout status deployment/web -n "$NS" --timeout=120s
