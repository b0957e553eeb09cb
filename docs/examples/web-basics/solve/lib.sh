# Sourced by the solve scripts: kubelab runs them with KUBECONFIG set and KUBELAB_NAMESPACE
# naming the lesson's namespace (a student of a class has their own).
set -euo pipefail
NS="${KUBELAB_NAMESPACE:-web-basics}"
