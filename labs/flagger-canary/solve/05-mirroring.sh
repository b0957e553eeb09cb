#!/usr/bin/env bash
# Exercise 5: traffic mirroring with iterations, then a release (pool size 60) under it.
source "$(dirname "$0")/lib.sh"

POOL=60
need_v2
# null removes a field: the Canary CRD takes iterations or stepWeight(s), never both.
k patch canary "$CANARY" --type merge -p '{"spec":{"analysis":{
  "stepWeight":null,"maxWeight":null,"iterations":3,"mirror":true,"mirrorWeight":100,
  "sessionAffinity":null}}}'
if pool_released "$POOL"; then
  echo "BUG_AFTER=$POOL was already released"
  show
  exit 0
fi
release_pool "$POOL"

# Requests from inside the mesh are mirrored: the answers come from the primary (pool 50),
# while the canary (pool 60) gets a copy of each (best effort: the checks do not need it).
while running && [ "$(iterations)" = 0 ]; do sleep 2; done
if running; then
  # shellcheck disable=SC2016 # $(seq ...) runs in the tester's shell
  tester 'for i in $(seq 1 10); do curl -s http://app-backend/version; echo; done' || true
  sleep 2
  echo "requests to /version the canary got as mirrored copies:" \
    "$(k logs "deployment/$CANARY" -c app-backend --tail=300 2>/dev/null | grep -c ' /version ' || true)"
fi
expect_phase Succeeded
