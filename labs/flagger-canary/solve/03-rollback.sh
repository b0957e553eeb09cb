#!/usr/bin/env bash
# Exercise 3: release a new pool size (an env change) and make its analysis fail by sending
# 500s and slow requests to the canary, until Flagger rolls back.
source "$(dirname "$0")/lib.sh"

POOL=40
need_v2
if [ "$(phase)" = Failed ] && [ "$(env_of "$CANARY" BUG_AFTER)" = "$POOL" ]; then
  echo "the release of BUG_AFTER=$POOL was already rolled back"
  show
  exit 0
fi
release_pool "$POOL"

# Straight to the canary's Service (not app-backend, where the canary gets only its weight),
# in batches of about 6 s so that nothing keeps running once the analysis has ended.
deadline=$((SECONDS + FINISH_TIMEOUT))
while running && [ "$SECONDS" -lt "$deadline" ]; do
  tester 'for i in 1 2 3 4 5; do
    curl -s -o /dev/null --max-time 5 http://app-backend-canary/status/500
    curl -s -o /dev/null --max-time 5 http://app-backend-canary/delay/1
  done' || true
  echo "phase $(phase), canary weight $(weight)%"
done
expect_phase Failed
echo "primary still runs $(image_of "$PRIMARY") with BUG_AFTER=$(env_of "$PRIMARY" BUG_AFTER)"
