{{/* The chart's name, shortened to a DNS label. */}}
{{- define "vecwal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every resource. */}}
{{- define "vecwal.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "vecwal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vecwal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vecwal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vecwal.labels" -}}
helm.sh/chart: {{ include "vecwal.chart" . }}
{{ include "vecwal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vecwal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vecwal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vecwal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the ConfigMap's vecwal.toml is mounted: the image's default command reads it. */}}
{{- define "vecwal.configPath" -}}/etc/vecwal/vecwal.toml{{- end }}

{{/* vecwal.toml from .Values.config; [metrics] listen is the chart's (metrics.port). */}}
{{- define "vecwal.toml" -}}
{{- if dig "metrics" "listen" "" .Values.config }}
{{- fail "config.metrics.listen: leave it out; the chart listens on 0.0.0.0:<metrics.port> (VECWAL_METRICS_LISTEN)" }}
{{- end }}
{{- /* Helm reads every number of a values file as a float: toToml would write 8 as 8.0 and
       268435456 as 2.68435456e+08, which vecwal refuses for an integer key; whole numbers
       become integers (a float key takes an integer too). */}}
{{- $config := deepCopy .Values.config }}
{{- include "vecwal.wholeNumbers" $config }}
{{- toToml $config }}
{{- end }}

{{/* SIGTERM must have time to flush: the grace period at least 30 s above the daemon's
     shutdown timeout, as the systemd unit's TimeoutStopSec. */}}
{{- define "vecwal.terminationGracePeriodSeconds" -}}
{{- $shutdown := dig "capture" "shutdown_timeout_s" 30 .Values.config | float64 }}
{{- $grace := .Values.terminationGracePeriodSeconds | int }}
{{- if lt (float64 $grace) (addf $shutdown 30) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least config.capture.shutdown_timeout_s (%v) + 30: the pod is killed before vecwal has flushed" $grace $shutdown) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/* The pod-level settings the Deployment and the CronJobs share. */}}
{{- define "vecwal.podSpecCommon" -}}
serviceAccountName: {{ include "vecwal.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "vecwal.fullname" . }}
  - name: tmp
    emptyDir:
      {{- with .Values.tmp.medium }}
      medium: {{ . }}
      {{- end }}
      {{- with .Values.tmp.sizeLimit }}
      sizeLimit: {{ . }}
      {{- end }}
  {{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The container settings the Deployment and the CronJobs share (image, env, mounts,
     security context); each adds its args. */}}
{{- define "vecwal.containerCommon" -}}
image: {{ include "vecwal.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  - name: VECWAL_METRICS_LISTEN
    value: {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | quote }}
  - name: TMPDIR
    value: /tmp
  {{- with .Values.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- if or .Values.credentials.existingSecret .Values.envFrom }}
envFrom:
  {{- with .Values.credentials.existingSecret }}
  - secretRef:
      name: {{ . }}
  {{- end }}
  {{- with .Values.envFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: config
    mountPath: /etc/vecwal
    readOnly: true
  - name: tmp
    mountPath: /tmp
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Turns every whole float of a (nested) map into an integer, in place. */}}
{{- define "vecwal.wholeNumbers" -}}
{{- range $key, $value := . }}
{{- if and (kindIs "float64" $value) (eq $value (floor $value)) }}
{{- $_ := set $ $key (int64 $value) }}
{{- else if kindIs "map" $value }}
{{- include "vecwal.wholeNumbers" $value }}
{{- end }}
{{- end }}
{{- end }}
