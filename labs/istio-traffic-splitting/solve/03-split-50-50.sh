#!/usr/bin/env bash
# Exercise 3: the course's own command, unchanged: move to a 50/50 split.
source "$(dirname "$0")/lib.sh"

kubectl patch virtualservice app-backend -n "$NS" --type='json' \
  -p='[{"op":"replace","path":"/spec/http/0/route/0/weight","value":50},
  {"op":"replace","path":"/spec/http/0/route/1/weight","value":50}]'
