{{/*
RBAC rules, one list per scope. Each verb here is one the operator uses; tests/packaging
proves each is granted and that nothing else is (no wildcards, no escalate/bind/impersonate).
*/}}

{{/* Namespaced kinds the operator watches or changes in each served namespace. */}}
{{- define "crossfade.rules.namespaced" -}}
- apiGroups: ["crossfade.dev"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["crossfade.dev"]
  resources: ["inferencepools/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["referencegrants"]
  verbs: ["get", "list", "watch"]
# The HTTPRoute router checks that a Service backend exists before giving it weight.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get"]
{{- if .Values.rbac.clusterAPI }}
- apiGroups: ["cluster.x-k8s.io"]
  resources: ["machinedeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["cluster.x-k8s.io"]
  resources: ["machinedeployments/scale"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["cluster.x-k8s.io"]
  resources: ["machines"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- if .Values.rbac.inferenceExtension }}
# Inference Extension pools as HTTPRoute backends: the GA group and the alpha one.
- apiGroups: ["inference.networking.k8s.io", "inference.networking.x-k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}

{{/* Cluster-scoped kinds: always granted by a ClusterRole. */}}
{{- define "crossfade.rules.cluster" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if not (include "crossfade.clusterWide" .) }}
# Serving listed namespaces, kopf lists and watches namespaces; refused, it retries for about
# a minute before starting, on every leader takeover.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- if .Values.rbac.karpenter }}
- apiGroups: ["karpenter.sh"]
  resources: ["nodepools"]
  verbs: ["get", "patch"]
- apiGroups: ["karpenter.sh"]
  resources: ["nodepools/scale"]
  verbs: ["get", "patch"]
- apiGroups: ["karpenter.sh"]
  resources: ["nodeclaims"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}

{{/* Karpenter records insufficient-capacity Events of cluster-scoped NodeClaims in "default". */}}
{{- define "crossfade.rules.karpenterEvents" -}}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
{{- end }}

{{/* Release namespace only: the leader Lease. */}}
{{- define "crossfade.rules.lease" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ .Values.leaderElection.leaseName | quote }}]
  verbs: ["get", "update", "patch"]
{{- end }}

{{/*
Secrets readable by name, grouped by namespace: a dict namespace -> sorted names, as JSON.
An entry without a namespace means the release namespace.
*/}}
{{- define "crossfade.secretsByNamespace" -}}
{{- $byNamespace := dict }}
{{- range .Values.rbac.secrets }}
{{- $ns := default $.Release.Namespace .namespace }}
{{- $_ := set $byNamespace $ns (append (get $byNamespace $ns | default list) .name | uniq | sortAlpha) }}
{{- end }}
{{- toJson $byNamespace }}
{{- end }}
