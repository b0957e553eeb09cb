#!/usr/bin/env bash
# Exercise 5: the course's own command, unchanged: send all traffic to v2.
source "$(dirname "$0")/lib.sh"

kubectl patch virtualservice app-backend -n "$NS" --type='json' \
  -p='[{"op":"replace","path":"/spec/http/0/route/0/weight","value":0},
  {"op":"replace","path":"/spec/http/0/route/1/weight","value":100}]'
