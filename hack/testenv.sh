#!/usr/bin/env bash
# Build the real control-plane binaries the test suite runs (kube-apiserver, etcd, kubectl, helm)
# from pinned Go modules into a git-ignored cache. Skips a binary whose stamp matches.
#
# Usage: hack/testenv.sh            build what is missing or stale, print the bin dir
#        hack/testenv.sh --print    only print the bin dir
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CROSSFADE_CACHE_DIR:-${REPO_ROOT}/.cache}"
BIN_DIR="${CACHE_DIR}/bin"

# Pinned versions. Change here only; the stamp files make the next run rebuild.
KUBERNETES_VERSION="v1.36.3"
ETCD_VERSION="v3.6.16"
HELM_VERSION="v3.22.0"

export GOMODCACHE="${CACHE_DIR}/go/mod"
export GOCACHE="${CACHE_DIR}/go/build"
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false -mod=mod"
export CGO_ENABLED=0

log() { printf '[testenv] %s\n' "$*" >&2; }

stamp_ok() { # name version
  [[ -x "${BIN_DIR}/$1" && -f "${BIN_DIR}/.$1.version" && "$(cat "${BIN_DIR}/.$1.version")" == "$2" ]]
}

write_stamp() { printf '%s' "$2" >"${BIN_DIR}/.$1.version"; }

# Print "replace" lines that point every ./staging module of k8s.io/kubernetes at its
# published v0.Y.Z tag: the staging replaces of the main module do not apply to us.
kubernetes_replaces() {
  local gomod="$1" minor_tag="$2"
  awk '/=> \.\/staging\/src\// { print $1 }' "${gomod}" | while read -r module; do
    printf 'replace %s => %s %s\n' "${module}" "${module}" "${minor_tag}"
  done
}

# Stamp the version into the binary so /version (and helm's kubeVersion checks) see it.
kubernetes_version_ldflags() {
  local version="$1" pkg=k8s.io/component-base/version minor
  minor="${version#v1.}"; minor="${minor%%.*}"
  printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean' \
    "${pkg}" "${version}" "${pkg}" "${pkg}" "${minor}" "${pkg}"
}

build_kube_apiserver() {
  local name=kube-apiserver version="${KUBERNETES_VERSION}"
  if stamp_ok "${name}" "${version}+ldflags"; then log "${name} ${version} cached"; return; fi
  log "building ${name} ${version} (first build takes several minutes)"
  local work="${CACHE_DIR}/build/${name}-${version}"
  rm -rf "${work}" && mkdir -p "${work}"
  local gomod
  gomod="$(cd "${work}" && go mod download -json "k8s.io/kubernetes@${version}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local staging_tag="v0.${version#v1.}"
  {
    printf 'module crossfade.dev/testenv/%s\n\ngo 1.26\n\n' "${name}"
    printf 'require k8s.io/kubernetes %s\n\n' "${version}"
    kubernetes_replaces "${gomod}" "${staging_tag}"
  } >"${work}/go.mod"
  (cd "${work}" && go get "k8s.io/kubernetes/cmd/kube-apiserver@${version}" \
    && go build -trimpath -ldflags="-s -w $(kubernetes_version_ldflags "${version}")" \
      -o "${BIN_DIR}/${name}" k8s.io/kubernetes/cmd/kube-apiserver)
  write_stamp "${name}" "${version}+ldflags"
}

# kubectl comes from the same build module as kube-apiserver (same pinned version), so the
# second build reuses nearly all of the first one's compiled packages.
build_kubectl() {
  local name=kubectl version="${KUBERNETES_VERSION}"
  if stamp_ok "${name}" "${version}+ldflags"; then log "${name} ${version} cached"; return; fi
  build_kube_apiserver
  log "building ${name} ${version}"
  local work="${CACHE_DIR}/build/kube-apiserver-${version}"
  (cd "${work}" && go get "k8s.io/kubernetes/cmd/kubectl@${version}" \
    && go build -trimpath -ldflags="-s -w $(kubernetes_version_ldflags "${version}")" \
      -o "${BIN_DIR}/${name}" k8s.io/kubernetes/cmd/kubectl)
  write_stamp "${name}" "${version}+ldflags"
}

build_etcd() {
  local name=etcd version="${ETCD_VERSION}"
  if stamp_ok "${name}" "${version}"; then log "${name} ${version} cached"; return; fi
  log "building ${name} ${version}"
  local work="${CACHE_DIR}/build/${name}-${version}"
  rm -rf "${work}" && mkdir -p "${work}"
  # The server module's main package is etcd itself; its own replaces point at sibling
  # directories, so we pin the sibling modules at the same tag instead.
  cat >"${work}/go.mod" <<GOMOD
module crossfade.dev/testenv/${name}

go 1.26

require go.etcd.io/etcd/server/v3 ${version}

replace go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 ${version}
replace go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 ${version}
replace go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 ${version}
replace go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 ${version}
GOMOD
  (cd "${work}" && go get "go.etcd.io/etcd/server/v3@${version}" \
    && go build -trimpath -ldflags='-s -w' -o "${BIN_DIR}/${name}" go.etcd.io/etcd/server/v3)
  write_stamp "${name}" "${version}"
}

build_helm() {
  local name=helm version="${HELM_VERSION}"
  if stamp_ok "${name}" "${version}"; then log "${name} ${version} cached"; return; fi
  log "building ${name} ${version}"
  local work="${CACHE_DIR}/build/${name}-${version}"
  rm -rf "${work}" && mkdir -p "${work}"
  printf 'module crossfade.dev/testenv/%s\n\ngo 1.26\n\nrequire helm.sh/helm/v3 %s\n' \
    "${name}" "${version}" >"${work}/go.mod"
  (cd "${work}" && go get "helm.sh/helm/v3/cmd/helm@${version}" \
    && go build -trimpath -ldflags='-s -w' -o "${BIN_DIR}/${name}" helm.sh/helm/v3/cmd/helm)
  write_stamp "${name}" "${version}"
}

main() {
  mkdir -p "${BIN_DIR}"
  if [[ "${1:-}" != "--print" ]]; then
    local only="${1:-all}"
    case "${only}" in
      all) build_etcd; build_kube_apiserver; build_kubectl; build_helm ;;
      kube-apiserver) build_kube_apiserver ;;
      kubectl) build_kubectl ;;
      etcd) build_etcd ;;
      helm) build_helm ;;
      *) log "unknown target ${only}"; exit 2 ;;
    esac
  fi
  echo "${BIN_DIR}"
}

main "$@"
