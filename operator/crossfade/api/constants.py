"""Identity of the InferencePool API and the bounds shared by models, CRD and docs."""

from __future__ import annotations

GROUP = "crossfade.dev"
VERSION = "v1alpha1"
PLURAL = "inferencepools"
SINGULAR = "inferencepool"
KIND = "InferencePool"
LIST_KIND = "InferencePoolList"
SHORT_NAMES = ("cfpool",)
CATEGORIES = ("crossfade",)
API_VERSION = f"{GROUP}/{VERSION}"
CRD_NAME = f"{PLURAL}.{GROUP}"

# List bounds are small on purpose: CEL cost estimates grow with maxItems.
MAX_PLACEMENTS = 8
MAX_HISTORY_ENTRIES = 20
MAX_CONDITIONS = 16
MAX_RULE_NAMES = 16
MAX_ROUTE53_VALUES = 8

# String bounds.
DNS_LABEL_MAX_CHARS = 63
DNS_SUBDOMAIN_MAX_CHARS = 253
NAME_MAX_CHARS = 253
SHORT_TEXT_MAX_CHARS = 256
URL_MAX_CHARS = 2048
PATH_MAX_CHARS = 1024
BODY_MAX_CHARS = 4096
REASON_MAX_CHARS = 1024
MESSAGE_MAX_CHARS = 4096
CONDITION_MESSAGE_MAX_CHARS = 32768
CONDITION_TYPE_MAX_CHARS = 316
TIMESTAMP_MAX_CHARS = 64

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CAMEL_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

# AWS Route 53 limits (weighted routing policy): weight 0..255, TTL 0..2147483647 seconds.
ROUTE53_MAX_WEIGHT = 255
ROUTE53_MAX_TTL_S = 2_147_483_647
