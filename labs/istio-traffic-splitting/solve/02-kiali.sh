#!/usr/bin/env bash
# Exercise 2: generate traffic so Kiali's graph (fed by VictoriaMetrics) shows it.
source "$(dirname "$0")/lib.sh"

traffic 200
