# Helpers sourced by the solve scripts of istio-traffic-splitting.
# kubelab runs solve scripts with KUBECONFIG set and KUBELAB_NAMESPACE naming the
# namespace of the lesson's app (istio unless a class gives each student their own).
set -euo pipefail

NS="${KUBELAB_NAMESPACE:-istio}"

# set_weights V1 V2: route V1% of app-backend's traffic to subset v1 and V2% to v2,
# rewriting the whole route so it also repairs a VirtualService a student mangled.
set_weights() {
  kubectl patch virtualservice app-backend -n "$NS" --type=merge -p "$(cat <<JSON
{"spec": {"http": [{"route": [
  {"destination": {"host": "app-backend", "subset": "v1"}, "weight": $1},
  {"destination": {"host": "app-backend", "subset": "v2"}, "weight": $2}
]}]}}
JSON
)"
}

# traffic N: send N requests to app-backend from the in-mesh curl-test pod, 20 at a
# time, each given up after 2 s (v1 hangs once its bug triggers).
traffic() {
  kubectl exec -n "$NS" curl-test -- sh -c \
    "seq 1 $1 | xargs -P 20 -I{} curl -s -o /dev/null --max-time 2 http://app-backend/ || true"
}
