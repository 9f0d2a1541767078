#!/usr/bin/env bash
# Install the policy scanners (checkov) into their own venv under .cache/tools, so their
# pinned dependencies never fight the project's requirements.lock. Prints the venv's bin dir.
#
# Usage: hack/policy-tools.sh    install what is missing or stale, print the bin dir
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CROSSFADE_CACHE_DIR:-${REPO_ROOT}/.cache}"
TOOLS_VENV="${CACHE_DIR}/tools/policy-venv"
STAMP="${TOOLS_VENV}/.installed"

# Pinned versions. Change here only; the stamp makes the next run reinstall.
CHECKOV_VERSION="3.3.30"
PYTHON="${PYTHON:-python3}"

log() { printf '[policy-tools] %s\n' "$*" >&2; }

if [[ -x "${TOOLS_VENV}/bin/checkov" && -f "${STAMP}" && "$(cat "${STAMP}")" == "checkov==${CHECKOV_VERSION}" ]]; then
  log "checkov ${CHECKOV_VERSION} cached"
else
  log "installing checkov ${CHECKOV_VERSION} into ${TOOLS_VENV}"
  rm -rf "${TOOLS_VENV}"
  mkdir -p "$(dirname "${TOOLS_VENV}")"
  "${PYTHON}" -m venv "${TOOLS_VENV}"
  "${TOOLS_VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
    "checkov==${CHECKOV_VERSION}" >&2
  printf 'checkov==%s' "${CHECKOV_VERSION}" >"${STAMP}"
fi
printf '%s\n' "${TOOLS_VENV}/bin"
