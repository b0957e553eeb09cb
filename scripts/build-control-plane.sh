#!/usr/bin/env bash
# Build the test suite's real Kubernetes control plane into a per-machine cache.
#
# The tests of kubelab's cluster code run against a real etcd + kube-apiserver +
# kube-controller-manager on loopback (the envtest pattern: no kubelet). This script makes
# those binaries once per machine and reuses them afterwards:
#
#   * kube-apiserver and kube-controller-manager v1.20.2, built from Debian bookworm's
#     source package `kubernetes` (1.20.5+really1.20.2, the full upstream tree with vendor/);
#   * etcd from Debian's `etcd-server` (3.4), linked into the cache.
#
# Nothing it downloads or builds is part of the repository. The cache holds bin/ and
# versions.json (what was built, from which package, with which Go). A second run with a
# complete cache does nothing and needs no network.
#
# Environment:
#   KUBELAB_K8S_CACHE=<dir>   cache folder (default: ~/.cache/kubelab/k8s-v1.20.2)
#   KUBELAB_K8S_REBUILD=1     build again even when the cache is complete
#
# Needs apt-get (Debian bookworm) and root, or the build dependencies already installed:
# golang-go, rsync, jq, etcd-server, golang-github-modern-go-reflect2-dev, and a deb-src line.
set -euo pipefail

K8S_VERSION="1.20.2"
DEB_PACKAGE="kubernetes"
# The upstream part of the Debian version; the Debian revision may move (security uploads).
DEB_VERSION="1.20.5+really1.20.2"
CACHE="${KUBELAB_K8S_CACHE:-${HOME}/.cache/kubelab/k8s-v${K8S_VERSION}}"
BIN="${CACHE}/bin"
BUILT=(kube-apiserver kube-controller-manager)
APT_DEPS=(golang-go rsync jq etcd-server golang-github-modern-go-reflect2-dev dpkg-dev)
SRC_LIST=/etc/apt/sources.list.d/kubelab-deb-src.sources
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2

log() { printf 'build-control-plane: %s\n' "$*"; }
die() {
    printf 'build-control-plane: ERROR: %s\n' "$*" >&2
    exit 1
}

cache_complete() {
    [[ -f "${CACHE}/versions.json" ]] || return 1
    local b
    for b in "${BUILT[@]}" etcd; do
        [[ -x "${BIN}/${b}" ]] || return 1
    done
    "${BIN}/kube-apiserver" --version 2>/dev/null | grep -q "v${K8S_VERSION}" || return 1
    "${BIN}/etcd" --version >/dev/null 2>&1 || return 1
}

as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "'$*' needs root. Run this script as root (or with passwordless sudo), or install \
${APT_DEPS[*]} and add a deb-src entry for bookworm main yourself"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: this script builds from Debian's source package and needs a \
Debian bookworm machine"
    local missing=() p
    for p in "${APT_DEPS[@]}"; do
        dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("${p}")
    done
    local need_src=0
    if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        need_src=1
    fi
    if [[ ${need_src} == 1 ]]; then
        log "adding a deb-src entry for bookworm main (${SRC_LIST})"
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            | as_root tee "${SRC_LIST}" >/dev/null
    fi
    if [[ ${#missing[@]} -gt 0 || ${need_src} == 1 ]]; then
        log "apt-get update"
        as_root apt-get update -qq || die "apt-get update failed (is deb.debian.org reachable?)"
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "installing ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
    fi
}

link_etcd() {
    local etcd
    etcd="$(command -v etcd || true)"
    [[ -n "${etcd}" ]] || etcd=/usr/bin/etcd
    [[ -x "${etcd}" ]] || die "etcd not found after installing etcd-server"
    ln -sfn "${etcd}" "${BIN}/etcd"
}

WORK=""
cleanup() {
    # The source tree is ~400 MB once built; never keep it.
    if [[ -n "${WORK}" && -d "${WORK}" ]]; then
        rm -rf "${WORK}"
    fi
}
trap cleanup EXIT

build() {
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/kubelab-k8s-build.XXXXXX")"
    local work="${WORK}"
    log "downloading the source package ${DEB_PACKAGE} ${DEB_VERSION} (34 MB)"
    (cd "${work}" && apt-get source --download-only -qq "${DEB_PACKAGE}" >/dev/null) \
        || die "apt-get source ${DEB_PACKAGE} failed (is there a deb-src entry for bookworm main, \
and has apt-get update run since?)"
    local orig
    orig="$(ls "${work}"/${DEB_PACKAGE}_${DEB_VERSION}.orig.tar.* 2>/dev/null | head -n1)"
    [[ -n "${orig}" ]] || die "the source package is not ${DEB_PACKAGE} ${DEB_VERSION}: found \
$(ls "${work}" | tr '\n' ' ')"
    DEB_FULL_VERSION="$(basename "$(ls "${work}"/${DEB_PACKAGE}_*.dsc)" .dsc)"
    DEB_FULL_VERSION="${DEB_FULL_VERSION#${DEB_PACKAGE}_}"
    mkdir -p "${work}/src"
    tar -xf "${orig}" -C "${work}/src" --strip-components=1 || die "cannot extract ${orig}"
    local src="${work}/src"
    [[ -d "${src}/vendor/github.com/modern-go/reflect2" ]] \
        || die "vendor/github.com/modern-go/reflect2 not in the source tree (layout changed?)"

    # reflect2 1.0.1 (vendored) crashes kube-apiserver on Go >= 1.18 (SIGSEGV in mapiternext
    # when serializing a custom resource); Debian's 1.0.2 is API-compatible and fixes it.
    [[ -d "${REFLECT2_SRC}" ]] || die "${REFLECT2_SRC} missing (golang-github-modern-go-reflect2-dev)"
    rm -rf "${src}/vendor/github.com/modern-go/reflect2"
    cp -r "${REFLECT2_SRC}" "${src}/vendor/github.com/modern-go/reflect2"
    rm -f "${src}/vendor/github.com/modern-go/reflect2/go.mod"

    mkdir -p "${src}/.go/src/k8s.io"
    ln -s ../../.. "${src}/.go/src/k8s.io/kubernetes"
    log "building ${BUILT[*]} with $(go version | awk '{print $3}') (about 10 min cold on 2 cores)"
    local started=${SECONDS}
    (cd "${src}/.go/src/k8s.io/kubernetes" \
        && GOPATH="${src}/.go" CGO_ENABLED=0 \
            KUBE_GIT_VERSION="v${K8S_VERSION}" KUBE_GIT_TREE_STATE=clean \
            make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"${work}/build.log" 2>&1) \
        || {
            tail -n 40 "${work}/build.log" >&2
            die "the build failed (last lines above)"
        }
    local took=$((SECONDS - started))
    local out="${src}/_output/local/bin/linux/$(go env GOARCH)"
    mkdir -p "${BIN}"
    local b
    for b in "${BUILT[@]}"; do
        [[ -x "${out}/${b}" ]] || die "${b} was not built (${out})"
        cp "${out}/${b}" "${BIN}/${b}.tmp.$$"
        mv -f "${BIN}/${b}.tmp.$$" "${BIN}/${b}"
    done
    link_etcd
    jq -n \
        --arg k8s "v${K8S_VERSION}" \
        --arg deb "${DEB_PACKAGE} ${DEB_FULL_VERSION}" \
        --arg go "$(go version | awk '{print $3}')" \
        --arg etcd "$("${BIN}/etcd" --version 2>/dev/null | head -n1 | awk '{print $NF}')" \
        --arg reflect2 "$(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)" \
        --arg built "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        --argjson seconds "${took}" \
        '{kubernetes: $k8s, source_package: $deb, go: $go, etcd: $etcd,
          reflect2_replacement: $reflect2, built_at: $built, build_seconds: $seconds}' \
        >"${CACHE}/versions.json"
    log "built in ${took}s -> ${BIN}"
}

main() {
    if [[ "${KUBELAB_K8S_REBUILD:-0}" != 1 ]] && cache_complete; then
        log "cached: ${BIN} ($(jq -r '.kubernetes + ", etcd " + .etcd + ", " + .go' "${CACHE}/versions.json"))"
        return 0
    fi
    apt_install
    mkdir -p "${BIN}"
    build
    cache_complete || die "the cache at ${CACHE} is incomplete after the build"
    log "done: $(jq -c . "${CACHE}/versions.json")"
}

main "$@"
