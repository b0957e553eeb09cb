#!/usr/bin/env bash
# Exercise 4: generate traffic so the sidecars send traces to Jaeger.
source "$(dirname "$0")/lib.sh"

traffic 100
