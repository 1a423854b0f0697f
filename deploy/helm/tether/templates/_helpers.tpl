{{/* The release's name, or RELEASE-tether when the release name does not say tether. */}}
{{- define "tether.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries; args: root, component. */}}
{{- define "tether.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: tether
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "tether.selector" . }}
{{- end -}}

{{/* Labels that select a component's pods; args: root, component. */}}
{{- define "tether.selector" -}}
app.kubernetes.io/name: tether
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A Secret's name: the value, or FULLNAME-SUFFIX; args: root, value, suffix. */}}
{{- define "tether.secretName" -}}
{{- .value | default (printf "%s-%s" (include "tether.fullname" .root) .suffix) -}}
{{- end -}}

{{/* The internal TLS Secret of a component; args: root, component. */}}
{{- define "tether.internalSecret" -}}
{{- $prefix := .root.Values.secretNames.internalTLSPrefix | default (printf "%s-internal" (include "tether.fullname" .root)) -}}
{{- printf "%s-%s" $prefix .component -}}
{{- end -}}

{{/* A Service's in-cluster DNS name; args: root, component. */}}
{{- define "tether.host" -}}
{{- printf "%s-%s.%s.svc" (include "tether.fullname" .root) .component .root.Release.Namespace -}}
{{- end -}}

{{/* The NATS URL every service dials. */}}
{{- define "tether.natsURL" -}}
{{- printf "nats://%s:4222" (include "tether.host" (dict "root" . "component" "nats")) -}}
{{- end -}}

{{/* The NATS replicas of each JetStream stream. */}}
{{- define "tether.streamReplicas" -}}
{{- if ge (int .Values.nats.replicas) 3 }}3{{ else }}1{{ end -}}
{{- end -}}

{{/* Security context every container gets: Pod Security Standard "restricted". */}}
{{- define "tether.containerSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* Pod-level settings shared by every pod; args: root, component, values. */}}
{{- define "tether.podSpec" -}}
serviceAccountName: {{ include "tether.fullname" .root }}-{{ .component }}
automountServiceAccountToken: {{ .kubeAPI | default false }}
enableServiceLinks: false
terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile: {type: RuntimeDefault}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
{{- range .root.Values.topologySpread.topologyKeys }}
- maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
  topologyKey: {{ . }}
  whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "tether.selector" $ | nindent 6 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The flags every Tether service takes: admin address, shutdown, NATS. args: root, component, nats (bool). */}}
{{- define "tether.commonArgs" -}}
- --admin-addr=0.0.0.0:9090
- --shutdown-timeout={{ sub (int .values.terminationGracePeriodSeconds) 15 }}s
{{- if .nats }}
- --nats-url={{ include "tether.natsURL" .root }}
{{- if .natsToken }}
- --nats-user=$(POD_NAME)
- --nats-token-file=/etc/tether/nats/token
{{- else }}
- --nats-user={{ .component }}
- --nats-password-file=/etc/tether/nats/password
{{- end }}
- --nats-ca-file=/etc/tether/internal/ca.crt
{{- end }}
{{- end -}}

{{/* The mTLS flags of a service with an internal certificate. */}}
{{- define "tether.mtlsArgs" -}}
- --mtls-cert=/etc/tether/internal/tls.crt
- --mtls-key=/etc/tether/internal/tls.key
- --mtls-ca=/etc/tether/internal/ca.crt
{{- end -}}

{{/*
A Tether service's Deployment, ServiceAccount, Service and PDB.
args: root, component, values, args (list of flags), ports (list of {name, port}),
mounts (list of {name, path, secret or configMap, items}), env (list), nats (bool),
natsToken (bool: log in to NATS as the pod, with its projected token; needs
POD_NAME in env), kubeAPI (bool: the pod gets its ServiceAccount's token for
the kube-apiserver), hpa (bool).
*/}}
{{- define "tether.service" -}}
{{- $full := include "tether.fullname" .root -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $full }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tether.labels" . | nindent 4 }}
# Only a service that calls the kube-apiserver (kubeAPI) gets a token for it.
automountServiceAccountToken: {{ .kubeAPI | default false }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $full }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tether.labels" . | nindent 4 }}
spec:
  {{- if not (and .hpa .values.autoscaling.enabled) }}
  replicas: {{ .values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  selector:
    matchLabels:
      {{- include "tether.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tether.labels" . | nindent 8 }}
      {{- with .values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- include "tether.podSpec" . | nindent 6 }}
      containers:
      - name: {{ .component }}
        image: "{{ .root.Values.image.repository }}/{{ .component }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}"
        imagePullPolicy: {{ .root.Values.image.pullPolicy }}
        args:
        {{- include "tether.commonArgs" . | nindent 8 }}
        {{- with .args }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with .values.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with .env }}
        env:
        {{- toYaml . | nindent 8 }}
        {{- end }}
        ports:
        {{- range .ports }}
        - {name: {{ .name }}, containerPort: {{ .port }}}
        {{- end }}
        - {name: admin, containerPort: 9090}
        readinessProbe:
          httpGet: {path: /readyz, port: admin}
          periodSeconds: 5
        livenessProbe:
          httpGet: {path: /healthz, port: admin}
          periodSeconds: 10
          failureThreshold: 6
        resources:
          {{- toYaml .values.resources | nindent 10 }}
        {{- include "tether.containerSecurity" . | nindent 8 }}
        volumeMounts:
        - {name: internal-tls, mountPath: /etc/tether/internal, readOnly: true}
        {{- if .nats }}
        - {name: nats, mountPath: /etc/tether/nats, readOnly: true}
        {{- end }}
        {{- range .mounts }}
        - {name: {{ .name }}, mountPath: {{ .path }}, readOnly: true}
        {{- end }}
      volumes:
      - name: internal-tls
        secret: {secretName: {{ include "tether.internalSecret" . }}}
      {{- if and .nats .natsToken }}
      # A token for nats-auth alone (its audience), which the kubelet
      # renews; it proves which pod this is, so the pod gets a NATS user
      # of its own.
      - name: nats
        projected:
          sources:
          - serviceAccountToken:
              audience: {{ .root.Values.natsAuth.tokenAudience }}
              expirationSeconds: 3600
              path: token
      {{- else if .nats }}
      - name: nats
        secret:
          secretName: {{ include "tether.secretName" (dict "root" .root "value" .root.Values.secretNames.natsAuth "suffix" "nats-auth") }}
          items: [{key: {{ .component }}, path: password}]
      {{- end }}
      {{- range .mounts }}
      - name: {{ .name }}
        {{- if .configMap }}
        configMap:
          name: {{ .configMap }}
        {{- else }}
        secret:
          secretName: {{ .secret }}
          {{- with .items }}
          items:
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- end }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $full }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tether.labels" . | nindent 4 }}
spec:
  selector:
    {{- include "tether.selector" . | nindent 4 }}
  ports:
  {{- range .ports }}
  - {name: {{ .name }}, port: {{ .port }}, targetPort: {{ .name }}}
  {{- end }}
  - {name: admin, port: 9090, targetPort: admin}
{{- if .values.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $full }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tether.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "tether.selector" . | nindent 6 }}
{{- end }}
{{- if and .hpa .values.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $full }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tether.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $full }}-{{ .component }}
  minReplicas: {{ .values.autoscaling.minReplicas }}
  maxReplicas: {{ .values.autoscaling.maxReplicas }}
  metrics:
  - type: Resource
    resource:
      name: cpu
      target: {type: Utilization, averageUtilization: {{ .values.autoscaling.targetCPUUtilizationPercentage }}}
  behavior:
    # Scale in slowly: every gateway and router holds long watches and streams.
    scaleDown:
      stabilizationWindowSeconds: 300
      policies: [{type: Pods, value: 1, periodSeconds: 60}]
{{- end }}
{{- end -}}

{{/*
Each service's NATS role and what it may do, as in the development stack
(dev/stack natsRoles; dev/helmchart compares the two). A YAML list of
{name, publish, subscribe, token}; "{user}" in a subject stands for the
user's own name: each user reads only its own router inbox and _INBOX (ADR
012). A token role's users are its pods, each logging in with its
projected ServiceAccount token (nats-auth names the user after the pod).
*/}}
{{- define "tether.natsUsers" -}}
{{- $followClusters := list "$JS.API.STREAM.INFO.CLUSTERS" "$JS.API.CONSUMER.CREATE.CLUSTERS.>" "$JS.API.CONSUMER.DELETE.CLUSTERS.>" "$JS.API.CONSUMER.INFO.CLUSTERS.>" "$JS.API.CONSUMER.MSG.NEXT.CLUSTERS.>" -}}
{{- $projectAgents := list
  "tether.agents.*"
  "$JS.API.STREAM.CREATE.SUBSCRIBERS" "$JS.API.STREAM.UPDATE.SUBSCRIBERS" "$JS.API.STREAM.INFO.SUBSCRIBERS"
  "$JS.API.CONSUMER.CREATE.SUBSCRIBERS.>" "$JS.API.CONSUMER.DELETE.SUBSCRIBERS.>" "$JS.API.CONSUMER.INFO.SUBSCRIBERS.>" "$JS.API.CONSUMER.MSG.NEXT.SUBSCRIBERS.>"
  "$JS.API.INFO" "$JS.API.STREAM.CREATE.AGENTS" "$JS.API.STREAM.UPDATE.AGENTS" "$JS.API.STREAM.INFO.AGENTS"
  "$JS.API.CONSUMER.CREATE.AGENTS.>" "$JS.API.CONSUMER.DURABLE.CREATE.AGENTS.>" "$JS.API.CONSUMER.DELETE.AGENTS.>"
  "$JS.API.CONSUMER.INFO.AGENTS.>" "$JS.API.CONSUMER.MSG.NEXT.AGENTS.>" "$JS.ACK.AGENTS.>"
  "$JS.API.STREAM.CREATE.KV_AGENTS_STATE" "$JS.API.STREAM.UPDATE.KV_AGENTS_STATE" "$JS.API.STREAM.INFO.KV_AGENTS_STATE"
  "$JS.API.STREAM.MSG.GET.KV_AGENTS_STATE" "$JS.API.DIRECT.GET.KV_AGENTS_STATE.>" "$KV.AGENTS_STATE.>"
  "$JS.API.CONSUMER.CREATE.KV_AGENTS_STATE.>" "$JS.API.CONSUMER.DELETE.KV_AGENTS_STATE.>" "$JS.FC.>" -}}
{{- $users := list
  (dict "name" "router" "token" true "publish" (concat (list "tether.req.*" "tether.sess.*.*") $followClusters) "subscribe" (list "tether.rtr.{user}.>" "_INBOX_{user}.>"))
  (dict "name" "subscriber" "token" true "publish" (concat (list "tether.rtr.*.*.*" "tether.agents.*" "tether.subscribers.*") $followClusters) "subscribe" (list "tether.req.* subscribers" "tether.sess.*.*" "_INBOX_{user}.>"))
  (dict "name" "agent-registry" "publish" (concat (list "tether.clusters.*" "$JS.API.STREAM.CREATE.CLUSTERS" "$JS.API.STREAM.UPDATE.CLUSTERS") $followClusters $projectAgents) "subscribe" (list "_INBOX_{user}.>"))
  (dict "name" "audit" "publish" (list) "subscribe" (list))
  (dict "name" "autoscaler" "publish" (list) "subscribe" (list))
-}}
{{- toYaml $users -}}
{{- end -}}
