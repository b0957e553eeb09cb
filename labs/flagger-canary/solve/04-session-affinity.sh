#!/usr/bin/env bash
# Exercise 4: session affinity with a cookie, then a release (pool size 50) under it.
source "$(dirname "$0")/lib.sh"

POOL=50
need_v2
k patch canary "$CANARY" --type merge \
  -p '{"spec":{"analysis":{"sessionAffinity":{"cookieName":"flagger-cookie","maxAge":21600}}}}'
if pool_released "$POOL"; then
  echo "BUG_AFTER=$POOL was already released"
  show
  exit 0
fi
release_pool "$POOL"

# Show the stickiness once traffic is shifted (best effort: the checks do not need it).
while running && [ "$(weight)" = 0 ]; do sleep 2; done
if running; then
  # shellcheck disable=SC2016 # $(seq ...) runs in the tester's shell
  cookie=$(tester 'for i in $(seq 1 30); do curl -s -D - -o /dev/null http://app-backend/version; done' |
    grep -i '^set-cookie: flagger-cookie=' | head -n 1 | sed -e 's/^[^:]*: *//' -e 's/;.*//' |
    tr -d '\r' || true)
  if [ -n "$cookie" ]; then
    echo "got the cookie $cookie; 5 requests with it (bug_after $POOL = the canary):"
    tester "for i in 1 2 3 4 5; do curl -s -H 'Cookie: $cookie' http://app-backend/version; echo; done" ||
      true
  fi
fi
expect_phase Succeeded
