# Helpers sourced by the solve scripts of flagger-canary.
# kubelab runs solve scripts with KUBECONFIG set and KUBELAB_NAMESPACE naming the lesson's
# namespace (canary-lab unless a class gives each student their own).
#
# Every script is idempotent: it first looks at what is already there (the student may have
# done part of the exercise, or the script ran before) and only changes what is missing, then
# waits until the Canary reached the outcome the exercise's checks look for. `kubelab test`
# polls the checks for only 90 s after a solve script, and one Flagger analysis takes minutes,
# so waiting here is what makes the checks pass.
# shellcheck shell=bash
set -euo pipefail

NS="${KUBELAB_NAMESPACE:-canary-lab}"
CANARY=app-backend           # the Canary, its target Deployment and the generated Services
PRIMARY=app-backend-primary  # the Deployment Flagger generates and promotes into
TESTER=curl-test             # in-mesh curl Pod of the chart
# One analysis step every 30 s; a whole release (detection, scale-up, 3 steps, promotion)
# takes about 4 minutes. kubelab stops a solve script after 600 s, hence 420 s at most for
# the analysis itself.
FINISH_TIMEOUT=420
# How long a change may take to be picked up before `kick` forces a new revision (more than
# two analysis intervals). The lesson's tests shorten it.
START_WAIT="${KUBELAB_SOLVE_START_WAIT:-75}"

k() { kubectl -n "$NS" "$@"; }

phase() { k get canary "$CANARY" -o jsonpath='{.status.phase}'; }

# weight, iterations: the canary's traffic weight (percent) and the iterations done so far.
weight() {
  local value
  value=$(k get canary "$CANARY" -o jsonpath='{.status.canaryWeight}')
  echo "${value:-0}"
}
iterations() {
  local value
  value=$(k get canary "$CANARY" -o jsonpath='{.status.iterations}')
  echo "${value:-0}"
}

# image_of DEPLOYMENT: the image of its app-backend container.
image_of() {
  k get deployment "$1" -o jsonpath='{.spec.template.spec.containers[?(@.name=="app-backend")].image}'
}

# tag_of DEPLOYMENT: the tag of that image (v1, v2).
tag_of() {
  local image
  image=$(image_of "$1")
  echo "${image##*:}"
}

# env_of DEPLOYMENT NAME: the value of the app container's environment variable NAME.
env_of() {
  k get deployment "$1" \
    -o jsonpath="{.spec.template.spec.containers[?(@.name==\"app-backend\")].env[?(@.name==\"$2\")].value}"
}

# running: true while Flagger is analysing or promoting a revision.
running() {
  case "$(phase)" in
    Progressing | Waiting | WaitingPromotion | Promoting | Finalising) return 0 ;;
    *) return 1 ;;
  esac
}

# show: the Canary and Flagger's latest events about it.
show() {
  k get canary "$CANARY" || true
  k get events --field-selector "involvedObject.kind=Canary,involvedObject.name=$CANARY" \
    --sort-by=.lastTimestamp 2>/dev/null | tail -n 12 || true
}

# wait_phase TIMEOUT PHASE...: wait until the Canary is in one of PHASEs (polling: kubectl
# wait takes one phase only, and "Succeeded or Failed" needs both); print the phase.
wait_phase() {
  local timeout=$1 deadline current
  shift
  deadline=$((SECONDS + timeout))
  while true; do
    current=$(phase 2>/dev/null || true)
    for wanted in "$@"; do
      if [ "$current" = "$wanted" ]; then
        echo "$current"
        return 0
      fi
    done
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: canary/$CANARY in $NS is ${current:-not there} after ${timeout}s, expected $*" >&2
      show >&2
      return 1
    fi
    sleep 2
  done
}

# wait_idle: let an analysis already under way (the student's own) finish first.
wait_idle() {
  wait_phase "$FINISH_TIMEOUT" Initialized Succeeded Failed >/dev/null
}

# started_within SECONDS: true once Flagger picked up a change of the Deployment (it looks at
# it once per analysis interval, 30 s).
started_within() {
  local deadline=$((SECONDS + $1))
  until running; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      return 1
    fi
    sleep 2
  done
}

# expect_phase PHASE: wait until the analysis ends; fail unless it ended in PHASE.
expect_phase() {
  local final
  final=$(wait_phase "$FINISH_TIMEOUT" Succeeded Failed)
  show
  if [ "$final" != "$1" ]; then
    echo "error: the analysis ended $final, expected $1" >&2
    return 1
  fi
}

# kick: start a new analysis of the Deployment as it is. Any change of the pod template is a
# new revision for Flagger, and `rollout restart` only stamps an annotation on it. Used when
# the template already holds the wanted change but its last analysis did not end as the
# exercise needs.
kick() {
  k rollout restart "deployment/$CANARY"
}

# start_release COMMAND...: change the Deployment with COMMAND and wait until Flagger starts
# analysing it. A template Flagger has analysed last already (say the student set the same
# value back and forth) is no new revision for it; then `kick` makes one.
start_release() {
  "$@"
  if ! started_within "$START_WAIT"; then
    echo "Flagger did not pick the change up as a new revision; restarting the rollout"
    kick
    if ! started_within 120; then
      echo "error: Flagger started no analysis of deployment/$CANARY in $NS" >&2
      show >&2
      return 1
    fi
  fi
  echo "Flagger is analysing the new revision (kubectl get canary -n $NS -w)"
}

# release_pool SIZE: start a release that sets the app's pool size (BUG_AFTER) to SIZE,
# unless an analysis is already under way (then that one is used).
release_pool() {
  if running; then
    echo "an analysis is already under way; using it"
  elif [ "$(env_of "$CANARY" BUG_AFTER)" != "$1" ]; then
    start_release k set env "deployment/$CANARY" "BUG_AFTER=$1"
  else
    start_release kick
  fi
}

# pool_released SIZE: the last release set the pool to SIZE and Flagger promoted it.
pool_released() {
  [ "$(phase)" = Succeeded ] && [ "$(env_of "$CANARY" BUG_AFTER)" = "$1" ] &&
    [ "$(env_of "$PRIMARY" BUG_AFTER)" = "$1" ]
}

# release_v2: exercise 2. The Deployment's image tag becomes v2 (the registry part stays as
# it is) and Flagger analyses and promotes it.
release_v2() {
  wait_phase 300 Initialized Succeeded Failed Progressing Waiting WaitingPromotion Promoting \
    Finalising >/dev/null
  wait_idle
  # Done once the primary runs v2, whatever later releases did since (a new analysis now
  # would promote their pending change too).
  if [ "$(tag_of "$PRIMARY")" = v2 ]; then
    echo "v2 is already promoted to $PRIMARY"
    show
    return 0
  fi
  local image
  image=$(image_of "$CANARY")
  if [ "${image##*:}" != v2 ]; then
    start_release k set image "deployment/$CANARY" "app-backend=${image%:*}:v2"
  else
    start_release kick
  fi
  expect_phase Succeeded
}

# need_v2: later exercises start from v2 on the primary (exercise 2).
need_v2() {
  wait_idle
  if [ "$(tag_of "$PRIMARY")" != v2 ]; then
    echo "the primary does not run v2 yet: doing exercise 2 first"
    release_v2
  fi
}

# tester SCRIPT: run a shell script in the in-mesh curl Pod.
tester() {
  k exec "$TESTER" -c "$TESTER" -- sh -c "$1"
}
