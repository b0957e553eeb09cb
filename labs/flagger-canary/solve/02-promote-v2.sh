#!/usr/bin/env bash
# Exercise 2: release v2 by changing only the image tag; Flagger analyses and promotes it.
source "$(dirname "$0")/lib.sh"

release_v2
echo "primary runs $(image_of "$PRIMARY")"
