#!/usr/bin/env bash
# Exercise 6: with 100% on v2, many more requests than v1 survives are all answered.
source "$(dirname "$0")/lib.sh"

set_weights 0 100
kubectl exec -n "$NS" curl-test -- sh -c \
  'for i in $(seq 1 300); do curl -s --max-time 2 http://app-backend/ || echo timeout; done' \
  | cut -d" " -f1 | sort | uniq -c
