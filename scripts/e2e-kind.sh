#!/usr/bin/env bash
# End to end on a real cluster, for maintainers with Docker: kubelab makes a kind cluster
# (its own config: gateway and Gitea ports, containerd's registry mirror), then
# `kubelab test LESSON --provider kind` runs every lesson (up, every exercise failing, solved
# and passing, down). On a failure it collects diagnostics (events, pod logs, helm status,
# the state file without secrets) before the cluster is deleted, whatever happened.
#
#   scripts/e2e-kind.sh [LESSON...]        (default: every lesson of `kubelab lessons`)
#
# Needs docker, kind >= v0.31.0 (node image kindest/node:v1.35.0), helm and kubectl
# (scripts/install-tools.sh), and kubelab installed (pip install -e .). Writes into
# ${KUBELAB_E2E_OUT:-e2e-kind}: <lesson>.json reports, diagnostics/ on failure.
# CI: .github/workflows/e2e-kind.yml. It cannot run on machines without Docker.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=$(mkdir -p "${KUBELAB_E2E_OUT:-e2e-kind}" && cd "${KUBELAB_E2E_OUT:-e2e-kind}" && pwd)
CLUSTER=kubelab # the kind provider's cluster name
KUBELAB=${KUBELAB:-kubelab}
# A kubelab home of its own: the run never touches the maintainer's lessons or classes.
export KUBELAB_HOME="$OUT/home"
mkdir -p "$KUBELAB_HOME"
export PATH="$PWD/.tools/bin:$PATH"

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "e2e-kind: $1 is missing: $2" >&2
    exit 2
  fi
}
need docker "install Docker (https://docs.docker.com/engine/install/)"
need kind "install kind v0.31.0 or newer (https://kind.sigs.k8s.io/docs/user/quick-start/)"
need helm "run scripts/install-tools.sh"
need kubectl "run scripts/install-tools.sh"
need "$KUBELAB" "pip install -e . (or set KUBELAB=.venv/bin/kubelab)"
need python3 "install Python 3.11 or newer"
docker info >/dev/null 2>&1 || { echo "e2e-kind: docker does not answer: start it" >&2; exit 2; }

if [ "$#" -gt 0 ]; then
  lessons=("$@")
else
  mapfile -t lessons < <("$KUBELAB" lessons -o json | python3 -c \
    'import json, sys; print("\n".join(l["id"] for l in json.load(sys.stdin)))')
fi

diagnostics() {
  local dir="$OUT/diagnostics"
  mkdir -p "$dir"
  echo "e2e-kind: collecting diagnostics into $dir" >&2
  local kubeconfig="$KUBELAB_HOME/kind-$CLUSTER/kubeconfig"
  if [ -f "$kubeconfig" ]; then
    export KUBECONFIG="$kubeconfig"
    kubectl get events -A --sort-by=.lastTimestamp >"$dir/events.txt" 2>&1 || true
    kubectl get pods -A -o wide >"$dir/pods.txt" 2>&1 || true
    kubectl get nodes -o wide >"$dir/nodes.txt" 2>&1 || true
    kubectl get pods -A --no-headers -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name \
      2>/dev/null | while read -r ns pod; do
      kubectl logs -n "$ns" "$pod" --all-containers --prefix --tail=500 \
        >"$dir/logs-$ns-$pod.txt" 2>&1 || true
    done
    helm list -A -o json 2>/dev/null | python3 -c \
      'import json, sys; [print(r["namespace"], r["name"]) for r in json.load(sys.stdin)]' \
      | while read -r ns release; do
        helm status "$release" -n "$ns" >"$dir/helm-$ns-$release.txt" 2>&1 || true
      done
  fi
  # The state file without secrets: any key naming a token, password or secret is masked.
  if [ -f "$KUBELAB_HOME/state.json" ]; then
    python3 - "$KUBELAB_HOME/state.json" >"$dir/state.json" <<'PY' || true
import json, re, sys

SECRET = re.compile(r"token|password|secret|credential", re.I)


def mask(value):
    if isinstance(value, dict):
        return {k: "***" if SECRET.search(k) else mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


print(json.dumps(mask(json.load(open(sys.argv[1]))), indent=2))
PY
  fi
}

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    diagnostics
  fi
  echo "e2e-kind: deleting kind cluster $CLUSTER" >&2
  kind delete cluster --name "$CLUSTER" >&2 || true
  exit "$rc"
}
trap cleanup EXIT

failed=()
for lesson in "${lessons[@]}"; do
  echo "e2e-kind: kubelab test $lesson --provider kind" >&2
  if ! "$KUBELAB" -o json test "$lesson" --provider kind --out "$OUT/$lesson.json"; then
    failed+=("$lesson")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "e2e-kind: failed: ${failed[*]} (reports and diagnostics in $OUT)" >&2
  exit 1
fi
echo "e2e-kind: every lesson passed on kind (${lessons[*]})" >&2
