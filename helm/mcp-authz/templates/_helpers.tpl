{{- define "mcp-authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcp-authz.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "mcp-authz.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "mcp-authz.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mcp-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mcp-authz.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mcp-authz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mcp-authz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcp-authz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mcp-authz.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "mcp-authz.bundleConfigMapName" -}}
{{- default (printf "%s-bundle" (include "mcp-authz.fullname" .)) .Values.policy.configMap.name }}
{{- end }}

{{/* Mount paths of the Secrets and ConfigMaps the config refers to. */}}
{{- define "mcp-authz.paths" -}}
config: /etc/mcp-authz/config
bundle: /etc/mcp-authz/bundle
jwks: /etc/mcp-authz/jwks
approval: /etc/mcp-authz/approval
signing: /etc/mcp-authz/signing
bundleToken: /etc/mcp-authz/bundle-token
ca: /etc/mcp-authz/ca
tlsServer: /etc/mcp-authz/tls/server
tlsMetrics: /etc/mcp-authz/tls/metrics
state: /var/lib/mcp-authz
{{- end }}

{{/* The service's config file: .Values.config plus what the chart owns (listeners, policy
     source, identity with Secret-mounted key files). */}}
{{- define "mcp-authz.config" -}}
{{- $paths := include "mcp-authz.paths" . | fromYaml }}
{{- $cfg := deepCopy .Values.config }}
{{- $ca := "" }}
{{- if .Values.tls.caSecret.name }}
{{- $ca = printf "%s/%s" $paths.ca .Values.tls.caSecret.key }}
{{- end }}
{{- $_ := set $cfg "server" (merge (dict "listen" (printf "0.0.0.0:%v" .Values.ports.grpc)) ($cfg.server | default dict)) }}
{{- $_ := set $cfg "metrics" (merge (dict "enabled" true "listen" (printf "0.0.0.0:%v" .Values.ports.metrics)) ($cfg.metrics | default dict)) }}
{{- with .Values.tls.server }}
{{- if .secretName }}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" $paths.tlsServer) "key_file" (printf "%s/tls.key" $paths.tlsServer) "require_client_cert" .requireClientCert "allowed_client_identities" (.allowedClientIdentities | default list) }}
{{- if .requireClientCert }}
{{- $_ := set $tls "client_ca_file" (printf "%s/ca.crt" $paths.tlsServer) }}
{{- end }}
{{- $_ := set $cfg.server "tls" $tls }}
{{- end }}
{{- end }}
{{- if .Values.tls.metrics.secretName }}
{{- $_ := set $cfg.metrics "tls" (dict "cert_file" (printf "%s/tls.crt" $paths.tlsMetrics) "key_file" (printf "%s/tls.key" $paths.tlsMetrics) "require_client_cert" false) }}
{{- end }}
{{- $policy := dict "entrypoint" .Values.policy.entrypoint }}
{{- if eq .Values.policy.source "image" }}
{{- $_ := set $policy "bundle" "/app/policies" }}
{{- $_ := set $policy "watch" false }}
{{- else if eq .Values.policy.source "configMap" }}
{{- $_ := set $policy "bundle" (printf "%s/%s" $paths.bundle .Values.policy.configMap.key) }}
{{- $_ := set $policy "watch" true }}
{{- else }}
{{- $_ := set $policy "bundle" .Values.policy.url }}
{{- $_ := set $policy "poll_interval_seconds" .Values.policy.pollIntervalSeconds }}
{{- $_ := set $policy "persist_dir" (printf "%s/bundles" $paths.state) }}
{{- if .Values.policy.urlTokenSecret.name }}
{{- $_ := set $policy "bearer_token_file" (printf "%s/%s" $paths.bundleToken .Values.policy.urlTokenSecret.key) }}
{{- end }}
{{- if $ca }}
{{- $_ := set $policy "ca_file" $ca }}
{{- end }}
{{- end }}
{{- if .Values.policy.signingKeySecret.name }}
{{- $signing := dict "public_key_file" (printf "%s/%s" $paths.signing .Values.policy.signingKeySecret.key) }}
{{- if .Values.policy.signingKeySecret.keyId }}
{{- $_ := set $signing "key_id" .Values.policy.signingKeySecret.keyId }}
{{- end }}
{{- $_ := set $policy "signing" $signing }}
{{- end }}
{{- $_ := set $cfg "policy" $policy }}
{{- $issuers := list }}
{{- range $i, $issuer := .Values.identity.issuers }}
{{- $entry := omit $issuer "jwksSecret" }}
{{- if and $issuer.jwksSecret $issuer.jwksSecret.name }}
{{- $_ := set $entry "jwks_file" (printf "%s/%d/%s" $paths.jwks $i (default "jwks.json" $issuer.jwksSecret.key)) }}
{{- end }}
{{- if and $ca $entry.jwks_url }}
{{- $_ := set $entry "jwks_ca_file" $ca }}
{{- end }}
{{- $issuers = append $issuers $entry }}
{{- end }}
{{- $identity := dict "issuers" $issuers }}
{{- $approval := .Values.identity.approval }}
{{- if $approval.issuer }}
{{- $entry := omit $approval "jwksSecret" }}
{{- if $approval.jwksSecret.name }}
{{- $_ := set $entry "jwks_file" (printf "%s/%s" $paths.approval $approval.jwksSecret.key) }}
{{- $_ := unset $entry "jwks_url" }}
{{- end }}
{{- if and $ca $entry.jwks_url }}
{{- $_ := set $entry "jwks_ca_file" $ca }}
{{- end }}
{{- $_ := set $identity "approval" $entry }}
{{- end }}
{{- $_ := set $cfg "identity" $identity }}
{{- toYaml $cfg }}
{{- end }}

{{/* NetworkPolicy peers from a list of {podSelector, namespaceSelector}. */}}
{{- define "mcp-authz.peers" -}}
{{- range . }}
- podSelector:
    matchLabels:
      {{- toYaml .podSelector | nindent 6 }}
  {{- with .namespaceSelector }}
  namespaceSelector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- end }}
{{- end }}
