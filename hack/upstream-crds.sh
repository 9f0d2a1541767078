#!/usr/bin/env bash
# Copy upstream CRD YAML, byte for byte, out of pinned Go module zips into the cache:
#   .cache/crds/gateway-api/           Gateway API standard channel
#   .cache/crds/inference-extension/   Gateway API Inference Extension (InferencePool, ...)
#   .cache/crds/cluster-api/           Cluster API core (MachineDeployment, Machine, ...)
#   .cache/crds/cluster-api-templates/ KubeadmConfigTemplate (kubeadm bootstrap) and
#                                      DockerMachineTemplate (CAPD): templates a MachineDeployment names
#   .cache/crds/karpenter/             Karpenter core (NodePool, NodeClaim)
# Usage: hack/upstream-crds.sh   (prints the crds dir)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CROSSFADE_CACHE_DIR:-${REPO_ROOT}/.cache}"
CRDS_DIR="${CACHE_DIR}/crds"

GATEWAY_API_VERSION="v1.6.3"
INFERENCE_EXTENSION_VERSION="v1.3.0"
CLUSTER_API_VERSION="v1.14.2"
KARPENTER_VERSION="v1.14.0"

export GOMODCACHE="${CACHE_DIR}/go/mod"
export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod"

module_dir() { # module@version -> extracted directory
  (cd "${CACHE_DIR}" && go mod download -json "$1") \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

copy_set() { # name module version subdir glob
  local name="$1" module="$2" version="$3" subdir="$4" glob="$5"
  local dest="${CRDS_DIR}/${name}"
  if [[ -f "${dest}/.version" && "$(cat "${dest}/.version")" == "${module}@${version}" ]]; then
    return
  fi
  local src
  src="$(module_dir "${module}@${version}")/${subdir}"
  rm -rf "${dest}" && mkdir -p "${dest}"
  # shellcheck disable=SC2086
  cp ${src}/${glob} "${dest}/"
  chmod 0644 "${dest}"/*.yaml
  printf '%s' "${module}@${version}" >"${dest}/.version"
  printf '[upstream-crds] %s from %s@%s\n' "${name}" "${module}" "${version}" >&2
}

mkdir -p "${CRDS_DIR}"
copy_set gateway-api sigs.k8s.io/gateway-api "${GATEWAY_API_VERSION}" \
  config/crd/standard 'gateway.networking.k8s.io_*.yaml'
# The ValidatingAdmissionPolicy shipped beside the CRDs is not a CRD; keep only CRDs.
rm -f "${CRDS_DIR}/gateway-api/gateway.networking.k8s.io_vap_safeupgrades.yaml"
copy_set inference-extension sigs.k8s.io/gateway-api-inference-extension \
  "${INFERENCE_EXTENSION_VERSION}" config/crd/bases '*.yaml'
copy_set cluster-api sigs.k8s.io/cluster-api "${CLUSTER_API_VERSION}" \
  core/config/crd/bases 'cluster.x-k8s.io_*.yaml'
copy_set cluster-api-templates sigs.k8s.io/cluster-api "${CLUSTER_API_VERSION}" \
  bootstrap/kubeadm/config/crd/bases 'bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml'
# A second module into the same set: copy_set's version stamp names the first, so check here.
if [[ ! -f "${CRDS_DIR}/cluster-api-templates/infrastructure.cluster.x-k8s.io_dockermachinetemplates.yaml" ]]; then
  cp "$(module_dir "sigs.k8s.io/cluster-api/test@${CLUSTER_API_VERSION}")/infrastructure/docker/config/crd/bases/infrastructure.cluster.x-k8s.io_dockermachinetemplates.yaml" \
    "${CRDS_DIR}/cluster-api-templates/"
  chmod 0644 "${CRDS_DIR}/cluster-api-templates/"*.yaml
fi
copy_set karpenter sigs.k8s.io/karpenter "${KARPENTER_VERSION}" \
  pkg/apis/crds 'karpenter.sh_*.yaml'
echo "${CRDS_DIR}"
