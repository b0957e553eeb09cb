# Helpers sourced by the solve scripts of the argo-rollouts lesson.
#
# kubelab runs solve scripts with KUBECONFIG set and KUBELAB_NAMESPACE naming the lesson's
# namespace (rollouts-lab unless a class gives each student their own). Everything here uses
# plain kubectl, no kubectl-argo-rollouts plugin: each helper says which plugin command it
# stands for and patches the same fields that command patches (argo-rollouts v1.9
# pkg/kubectl-argo-rollouts/cmd/{set,promote,abort,retry}). Status fields go through the
# status subresource (the Rollout CRD has one), spec fields through a normal patch.
set -euo pipefail

NS="${KUBELAB_NAMESPACE:-rollouts-lab}"
# How long to wait for a Rollout to reach a state (kubelab gives a solve script 600 s).
WAIT_SECONDS="${KUBELAB_SOLVE_WAIT_SECONDS:-540}"
# Seconds between two looks at a Rollout (tests against an emulated controller use less).
POLL_SECONDS="${KUBELAB_SOLVE_POLL_SECONDS:-2}"

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# field ROLLOUT JSONPATH: one field of the Rollout (empty when unset).
field() { kubectl get rollout "$1" -n "$NS" -o jsonpath="$2"; }

# image_tag ROLLOUT: the tag of the image the Rollout's pod template asks for (desired version).
image_tag() { local image; image=$(field "$1" '{.spec.template.spec.containers[0].image}'); printf '%s\n' "${image##*:}"; }

# stable_tag ROLLOUT: the tag of the image of the stable ReplicaSet (what users get).
stable_tag() {
  local hash image
  hash=$(field "$1" '{.status.stableRS}')
  [ -n "$hash" ] || { printf '\n'; return; }
  image=$(kubectl get replicaset "$1-$hash" -n "$NS" \
    -o jsonpath='{.spec.template.spec.containers[0].image}' 2>/dev/null || true)
  printf '%s\n' "${image##*:}"
}

phase() { field "$1" '{.status.phase}'; }

# set_tag ROLLOUT TAG = kubectl argo rollouts set image ROLLOUT app-backend=<repository>:TAG
# (a JSON patch of the container image; kubectl set image does not know Rollouts).
set_tag() {
  local image
  image=$(field "$1" '{.spec.template.spec.containers[0].image}')
  if [ "${image##*:}" = "$2" ]; then
    say "rollout/$1 already asks for ${image}"
    return
  fi
  kubectl patch rollout "$1" -n "$NS" --type=json -p "$(printf \
    '[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"%s:%s"}]' \
    "${image%:*}" "$2")"
}

# promote ROLLOUT = kubectl argo rollouts promote ROLLOUT: clear the pause conditions (status)
# and, if someone paused the Rollout by hand, unpause it (spec).
promote() {
  if [ "$(field "$1" '{.spec.paused}')" = "true" ]; then
    kubectl patch rollout "$1" -n "$NS" --type=merge -p '{"spec":{"paused":false}}'
  fi
  if [ -n "$(field "$1" '{.status.pauseConditions}')" ]; then
    kubectl patch rollout "$1" -n "$NS" --subresource=status --type=merge \
      -p '{"status":{"pauseConditions":null}}'
  fi
}

# promote_full ROLLOUT = kubectl argo rollouts promote --full ROLLOUT: skip the remaining steps,
# pauses and analyses.
promote_full() {
  if [ "$(field "$1" '{.spec.paused}')" = "true" ]; then
    kubectl patch rollout "$1" -n "$NS" --type=merge -p '{"spec":{"paused":false}}'
  fi
  kubectl patch rollout "$1" -n "$NS" --subresource=status --type=merge \
    -p '{"status":{"promoteFull":true}}'
}

# retry ROLLOUT = kubectl argo rollouts retry rollout ROLLOUT: leave the aborted state.
retry() {
  kubectl patch rollout "$1" -n "$NS" --subresource=status --type=merge \
    -p '{"status":{"abort":false}}'
}

# wait_observed ROLLOUT: until the controller has seen the latest spec (until then status.phase
# still describes the previous one).
wait_observed() {
  local deadline=$((SECONDS + 120)) generation observed
  while :; do
    generation=$(kubectl get rollout "$1" -n "$NS" -o jsonpath='{.metadata.generation}')
    observed=$(field "$1" '{.status.observedGeneration}')
    [ "$observed" = "$generation" ] && return
    [ "$SECONDS" -lt "$deadline" ] || die "rollout/$1: the controller did not observe generation $generation in 120s (is Argo Rollouts running? kubectl get pods -n argo-rollouts)"
    sleep "$POLL_SECONDS"
  done
}

# progress ROLLOUT: one line with what the Rollout is doing.
progress() {
  field "$1" '{.status.phase}{" step="}{.status.currentStepIndex}{" canary-weight="}{.status.canary.weights.canary.weight}{" "}{.status.message}'
}

# snapshot ROLLOUT: "PHASE STEP PAUSE-TIMES" in one read, what the waits decide on. Each
# pause is promoted once: until the controller acts on a promotion, the status still shows
# the pause just promoted, and promoting "again" would clear the next pause as soon as the
# controller reaches it (skipping a step). A pause's start time tells two pauses apart, and
# a Paused phase with no pause condition (the controller is acting on a promotion) is no
# pause to promote.
snapshot() {
  field "$1" '{.status.phase} {.status.currentStepIndex} {.status.pauseConditions[*].startTime}'
}

# pausing SNAPSHOT: whether the snapshot shows a pause condition (a start time).
pausing() { [ -n "$(printf '%s\n' "$1" | cut -d' ' -f3-)" ]; }

# pause_reasons ROLLOUT: why the Rollout is paused (BlueGreenPause, CanaryPauseStep,
# InconclusiveAnalysis, ...), space separated; empty when it is not.
pause_reasons() { field "$1" '{.status.pauseConditions[*].reason}'; }

# wait_phase ROLLOUT PHASE [SECONDS]: until status.phase is PHASE (like
# kubectl wait rollout/ROLLOUT --for=jsonpath='{.status.phase}'=PHASE, but printing progress and
# failing at once when the Rollout is Degraded, e.g. aborted by a failed analysis, or paused by
# an inconclusive one, which waits for a human).
wait_phase() {
  local rollout=$1 want=$2 limit=${3:-$WAIT_SECONDS} now last=""
  local deadline=$((SECONDS + limit))
  wait_observed "$rollout"
  while :; do
    now=$(progress "$rollout")
    [ "$now" = "$last" ] || say "rollout/$rollout: $now"
    last=$now
    case "$now" in
      "$want "*) return ;;
      "Degraded "*) die "rollout/$rollout is Degraded: $now (kubectl describe rollout $rollout -n $NS)" ;;
      "Paused "*)
        case " $(pause_reasons "$rollout") " in
          *" InconclusiveAnalysis "*) die "rollout/$rollout paused: its analysis was inconclusive (no data for the new pods?); look at: kubectl get analysisruns -n $NS -l app=$rollout" ;;
        esac
        ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "rollout/$rollout is not $want after ${limit}s: $now"
    sleep "$POLL_SECONDS"
  done
}

# promote_until_healthy ROLLOUT: promote every pause the Rollout stops at until it is Healthy
# (what clicking "Promote" in the dashboard at each pause does).
promote_until_healthy() {
  local rollout=$1 deadline=$((SECONDS + WAIT_SECONDS)) now last="" seen promoted=""
  wait_observed "$rollout"
  while :; do
    seen=$(snapshot "$rollout")
    now=$(progress "$rollout")
    [ "$now" = "$last" ] || say "rollout/$rollout: $now"
    last=$now
    case "$seen" in
      "Healthy "*) return ;;
      "Degraded "*) die "rollout/$rollout is Degraded: $now" ;;
      "Paused "*) if pausing "$seen" && [ "$seen" != "$promoted" ]; then promote "$rollout"; promoted=$seen; fi ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "rollout/$rollout is not Healthy after ${WAIT_SECONDS}s: $now"
    sleep "$POLL_SECONDS"
  done
}

# wait_paused_at ROLLOUT STEP: until the Rollout is Paused with status.currentStepIndex STEP,
# promoting every pause it stops at before that step.
wait_paused_at() {
  local rollout=$1 target=$2 deadline=$((SECONDS + WAIT_SECONDS)) now last="" seen promoted=""
  local step
  wait_observed "$rollout"
  while :; do
    seen=$(snapshot "$rollout")
    now=$(progress "$rollout")
    [ "$now" = "$last" ] || say "rollout/$rollout: $now"
    last=$now
    step=$(printf '%s\n' "$seen" | cut -d' ' -f2)
    case "$seen" in
      "Paused "*)
        if [ "${step:-0}" -eq "$target" ]; then return; fi
        if [ "${step:-0}" -gt "$target" ]; then die "rollout/$rollout is already past step $target"; fi
        if pausing "$seen" && [ "$seen" != "$promoted" ]; then promote "$rollout"; promoted=$seen; fi
        ;;
      "Degraded "*) die "rollout/$rollout is Degraded: $now" ;;
      "Healthy "*) die "rollout/$rollout finished its steps before step $target" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "rollout/$rollout did not pause at step $target: $now"
    sleep "$POLL_SECONDS"
  done
}

# reset_to ROLLOUT TAG: make TAG the stable, Healthy version again, the fast way (ask for TAG,
# leave an aborted state, promote fully). Lets a solve script start from its exercise's starting
# point even when the exercise was done before.
reset_to() {
  local rollout=$1 tag=$2
  if [ "$(stable_tag "$rollout")" = "$tag" ] && [ "$(image_tag "$rollout")" = "$tag" ] \
    && [ "$(phase "$rollout")" = Healthy ]; then
    return
  fi
  say "rollout/$rollout: back to $tag first"
  set_tag "$rollout" "$tag"
  wait_observed "$rollout"
  # A new pod template clears an abort; asking again for the aborted version does not.
  if [ "$(field "$rollout" '{.status.abort}')" = "true" ]; then retry "$rollout"; fi
  if [ "$(field "$rollout" '{.status.currentPodHash}')" != "$(field "$rollout" '{.status.stableRS}')" ]; then
    promote_full "$rollout"
  fi
  wait_phase "$rollout" Healthy
}
