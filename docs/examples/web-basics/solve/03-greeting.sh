#!/usr/bin/env bash
# Exercise 3: change the greeting in the ConfigMap.
source "$(dirname "$0")/lib.sh"
kubectl patch configmap web-config -n "$NS" --type=merge -p '{"data":{"greeting":"welcome"}}'
