{{/* ------------------------------------------------------------------------------
Names and labels
------------------------------------------------------------------------------ */}}

{{- define "kafka-replicator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>", or the release name alone when it already contains the chart name. */}}
{{- define "kafka-replicator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* KubeRay requires a DNS-1035 RayCluster name of at most 53 characters (it appends
"-head-svc" and friends to it). */}}
{{- define "kafka-replicator.rayClusterName" -}}
{{- $name := include "kafka-replicator.fullname" . | trunc 53 | trimSuffix "-" -}}
{{- if regexMatch "^[a-z]" $name -}}
{{- $name -}}
{{- else -}}
{{- printf "r-%s" $name | trunc 53 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The head Service KubeRay creates for the RayCluster. */}}
{{- define "kafka-replicator.headService" -}}
{{- printf "%s-head-svc" (include "kafka-replicator.rayClusterName" .) -}}
{{- end -}}

{{- define "kafka-replicator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kafka-replicator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka-replicator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kafka-replicator.labels" -}}
helm.sh/chart: {{ include "kafka-replicator.chart" . }}
{{ include "kafka-replicator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of a pod: the common labels, its component and the user's podLabels.
No helm.sh/chart label: a new chart version alone must not recreate the Ray pods.
Call with (dict "root" $ "component" "driver"). */}}
{{- define "kafka-replicator.podLabels" -}}
{{ include "kafka-replicator.selectorLabels" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kafka-replicator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kafka-replicator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kafka-replicator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}

{{/* ------------------------------------------------------------------------------
Quantities: Kubernetes CPU and memory quantities as integers
------------------------------------------------------------------------------ */}}

{{/* CPU quantity ("500m", "1", 0.5, 2) -> integer millicores. */}}
{{- define "kafka-replicator.millicpu" -}}
{{- $v := . -}}
{{- if and (kindIs "string" $v) (hasSuffix "m" $v) -}}
{{- round (trimSuffix "m" $v | float64) 0 | int64 -}}
{{- else -}}
{{- round (mulf (float64 $v) 1000) 0 | int64 -}}
{{- end -}}
{{- end -}}

{{/* Memory quantity ("512Mi", "1Gi", "1G", 536870912) -> integer bytes. */}}
{{- define "kafka-replicator.bytes" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $v -}}
{{- $unit := trimPrefix $num $v -}}
{{- $mult := 1 -}}
{{- if $unit -}}{{- $mult = index $units $unit -}}{{- end -}}
{{- round (mulf (float64 $num) $mult) 0 | int64 -}}
{{- else -}}
{{- round (float64 $v) 0 | int64 -}}
{{- end -}}
{{- end -}}

{{/* Integer millicores -> CPU quantity. */}}
{{- define "kafka-replicator.cpuQuantity" -}}
{{- $m := int64 . -}}
{{- if eq (mod $m 1000) 0 -}}{{- div $m 1000 -}}{{- else -}}{{- printf "%dm" $m -}}{{- end -}}
{{- end -}}

{{/* Integer bytes -> memory quantity (Mi when it divides evenly). */}}
{{- define "kafka-replicator.memoryQuantity" -}}
{{- $b := int64 . -}}
{{- if and (gt $b 0) (eq (mod $b 1073741824) 0) -}}{{- printf "%dGi" (div $b 1073741824) -}}
{{- else if and (gt $b 0) (eq (mod $b 1048576) 0) -}}{{- printf "%dMi" (div $b 1048576) -}}
{{- else -}}{{- $b -}}{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------------------------
The replicator's config (ConfigMap <fullname>-config, key config.yaml)
------------------------------------------------------------------------------ */}}

{{/* Top-level values keys that belong to the replicator's config (ReplicatorConfig's
fields); every other top-level key is chart-only (replicator.config.CHART_ONLY_KEYS). */}}
{{- define "kafka-replicator.configKeys" -}}
["sourceKafka", "targetKafka", "consumerGroup", "replicaCount", "consumer", "producer", "replication", "resources", "shutdownGracePeriodSeconds"]
{{- end -}}

{{- define "kafka-replicator.configPath" -}}/etc/kafka-replicator/config.yaml{{- end -}}

{{/* Where the tlsSecret of sourceKafka / targetKafka is mounted. */}}
{{- define "kafka-replicator.tlsDir" -}}
{{- printf "/etc/kafka-replicator-tls/%s" (trimSuffix "Kafka" .) -}}
{{- end -}}

{{/* Environment variable that carries a Secret's value: SOURCE_KAFKA_SASL_PASSWORD, ...
Call with (list "sourceKafka" "saslPassword"). */}}
{{- define "kafka-replicator.secretEnvName" -}}
{{- $side := index . 0 -}}
{{- $what := index . 1 -}}
{{- printf "%s_KAFKA_%s" (trimSuffix "Kafka" $side | upper) (ternary "SASL_PASSWORD" "SSL_KEY_PASSWORD" (eq $what "saslPassword")) -}}
{{- end -}}

{{/* The config as YAML: the replicator keys of the values, with the chart-only keys of
sourceKafka/targetKafka (saslPasswordSecret, sslKeyPasswordSecret, tlsSecret) replaced by
what the replicator reads (saslPasswordEnv, sslKeyPasswordEnv, sslCaFile, ...). Also fails
early, naming the key, on values the replicator would reject at start-up. */}}
{{- define "kafka-replicator.config" -}}
{{- $v := .Values -}}
{{- $cfg := dict -}}
{{- range $key := include "kafka-replicator.configKeys" . | fromJsonArray -}}
{{- if and (hasKey $v $key) (not (kindIs "invalid" (index $v $key))) -}}
{{- $_ := set $cfg $key (deepCopy (index $v $key)) -}}
{{- end -}}
{{- end -}}
{{- range $side := list "sourceKafka" "targetKafka" -}}
{{- $c := index $cfg $side | default dict -}}
{{- range $what := list "saslPassword" "sslKeyPassword" -}}
{{- if hasKey $c $what -}}
{{- fail (printf "%s.%s: passwords must not be in values (the chart would put them in a ConfigMap); store it in a Secret and set %s.%sSecret: {name: <secret>, key: <key>}" $side $what $side $what) -}}
{{- end -}}
{{- if hasKey $c (printf "%sEnv" $what) -}}
{{- fail (printf "%s.%sEnv is set by the chart; name the Secret that holds the password in %s.%sSecret: {name: <secret>, key: <key>}" $side $what $side $what) -}}
{{- end -}}
{{- with (index $c (printf "%sSecret" $what)) -}}
{{- $_ := set $c (printf "%sEnv" $what) (include "kafka-replicator.secretEnvName" (list $side $what)) -}}
{{- end -}}
{{- end -}}
{{- with $c.tlsSecret -}}
{{- $dir := include "kafka-replicator.tlsDir" $side -}}
{{- $files := dict "sslCaFile" (ternary .caKey "ca.crt" (hasKey . "caKey")) "sslCertFile" (.certKey | default "") "sslKeyFile" (.keyKey | default "") -}}
{{- if ne (empty $files.sslCertFile) (empty $files.sslKeyFile) -}}
{{- fail (printf "%s.tlsSecret: set both certKey and keyKey (client certificate and its key) or neither" $side) -}}
{{- end -}}
{{- range $field := list "sslCaFile" "sslCertFile" "sslKeyFile" -}}
{{- $key := index $files $field -}}
{{- if $key -}}
{{- if hasKey $c $field -}}
{{- fail (printf "%s.%s and %s.tlsSecret both give this file; keep one" $side $field $side) -}}
{{- end -}}
{{- $_ := set $c $field (printf "%s/%s" $dir $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Checks the replicator would make at start-up, made here so helm refuses them. */ -}}
{{- $protocol := $c.securityProtocol | default "PLAINTEXT" -}}
{{- if hasPrefix "SASL" $protocol -}}
{{- if not $c.saslMechanism -}}
{{- fail (printf "%s.saslMechanism: securityProtocol %s needs saslMechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" $side $protocol) -}}
{{- end -}}
{{- if not $c.saslUsername -}}
{{- fail (printf "%s.saslUsername: securityProtocol %s needs saslUsername" $side $protocol) -}}
{{- end -}}
{{- if not $c.saslPasswordEnv -}}
{{- fail (printf "%s.saslPasswordSecret: securityProtocol %s needs the password; set saslPasswordSecret: {name: <secret>, key: <key>}" $side $protocol) -}}
{{- end -}}
{{- else if or $c.saslMechanism $c.saslUsername $c.saslPasswordSecret -}}
{{- fail (printf "%s.securityProtocol: SASL settings are given but securityProtocol is %s; use SASL_PLAINTEXT or SASL_SSL" $side $protocol) -}}
{{- end -}}
{{- if $c -}}
{{- $_ := set $cfg $side (omit $c "saslPasswordSecret" "sslKeyPasswordSecret" "tlsSecret") -}}
{{- end -}}
{{- end -}}
{{- $enabled := include "kafka-replicator.enabledDirections" . | fromJsonArray -}}
{{- if not $enabled -}}
{{- fail "replication: no direction is enabled; set replication.sourceToTarget.enabled or replication.targetToSource.enabled to true, with its topics" -}}
{{- end -}}
{{- range $d := $enabled -}}
{{- $topics := (index $v.replication $d).topics | default list -}}
{{- if not $topics -}}
{{- fail (printf "replication.%s.topics: the direction is enabled but lists no topics; add [{sourceTopicName: ..., targetTopicName: ...}] or set enabled: false" $d) -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $t := $topics -}}
{{- if hasKey $seen $t.sourceTopicName -}}
{{- fail (printf "replication.%s.topics: sourceTopicName %q is listed twice" $d $t.sourceTopicName) -}}
{{- end -}}
{{- $_ := set $seen $t.sourceTopicName true -}}
{{- end -}}
{{- end -}}
{{- range $d := list "sourceToTarget" "targetToSource" -}}
{{- $group := index ($v.consumerGroup | default dict) $d -}}
{{- if kindIs "map" $group -}}
{{- $session := $group.sessionTimeoutMs | default 45000 | int64 -}}
{{- $heartbeat := $group.heartbeatIntervalMs | default 3000 | int64 -}}
{{- if ge $heartbeat $session -}}
{{- fail (printf "consumerGroup.%s.heartbeatIntervalMs (%d) must be lower than sessionTimeoutMs (%d); a third of it is usual" $d $heartbeat $session) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- include "kafka-replicator.checkResources" . -}}
{{- toYaml $cfg -}}
{{- end -}}

{{- define "kafka-replicator.configChecksum" -}}
{{- include "kafka-replicator.config" . | sha256sum -}}
{{- end -}}

{{/* ------------------------------------------------------------------------------
Sizing: members per direction, worker groups
------------------------------------------------------------------------------ */}}

{{/* JSON list of the enabled directions. */}}
{{- define "kafka-replicator.enabledDirections" -}}
{{- $out := list -}}
{{- range $d := list "sourceToTarget" "targetToSource" -}}
{{- $dir := index ($.Values.replication | default dict) $d | default dict -}}
{{- if and (hasKey $dir "enabled") (kindIs "bool" $dir.enabled) -}}
{{- if $dir.enabled -}}{{- $out = append $out $d -}}{{- end -}}
{{- else -}}
{{- /* the model's default for a direction present without `enabled` is true */ -}}
{{- if hasKey ($.Values.replication | default dict) $d -}}{{- $out = append $out $d -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Members of a direction: replication.<d>.replicaCount, else replicaCount.
Call with (list $ "sourceToTarget"). */}}
{{- define "kafka-replicator.members" -}}
{{- $root := index . 0 -}}
{{- $dir := index $root.Values.replication (index . 1) | default dict -}}
{{- if and (hasKey $dir "replicaCount") (not (kindIs "invalid" $dir.replicaCount)) -}}
{{- int64 $dir.replicaCount -}}
{{- else if not (kindIs "invalid" $root.Values.replicaCount) -}}
{{- int64 $root.Values.replicaCount -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/* CPU one member reserves in Ray, in millicores (the driver's default is 0.5). */}}
{{- define "kafka-replicator.memberMilliCPU" -}}
{{- $r := (.Values.resources | default dict).requests | default dict -}}
{{- if $r.cpu -}}{{- include "kafka-replicator.millicpu" $r.cpu -}}{{- else -}}500{{- end -}}
{{- end -}}

{{/* Memory one member reserves in Ray, in bytes (0: none). */}}
{{- define "kafka-replicator.memberBytes" -}}
{{- $r := (.Values.resources | default dict).requests | default dict -}}
{{- if $r.memory -}}{{- include "kafka-replicator.bytes" $r.memory -}}{{- else -}}0{{- end -}}
{{- end -}}

{{/* Refuse limits below requests (Kubernetes would refuse the pods). */}}
{{- define "kafka-replicator.checkResources" -}}
{{- $res := .Values.resources | default dict -}}
{{- $req := $res.requests | default dict -}}
{{- $lim := $res.limits | default dict -}}
{{- if and $req.cpu $lim.cpu -}}
{{- if lt (include "kafka-replicator.millicpu" $lim.cpu | int64) (include "kafka-replicator.millicpu" $req.cpu | int64) -}}
{{- fail (printf "resources.limits.cpu (%v) is lower than resources.requests.cpu (%v)" $lim.cpu $req.cpu) -}}
{{- end -}}
{{- end -}}
{{- if and $req.memory $lim.memory -}}
{{- if lt (include "kafka-replicator.bytes" $lim.memory | int64) (include "kafka-replicator.bytes" $req.memory | int64) -}}
{{- fail (printf "resources.limits.memory (%v) is lower than resources.requests.memory (%v)" $lim.memory $req.memory) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The worker groups as a JSON list of {name, directions, replicas, min, max}. */}}
{{- define "kafka-replicator.workerGroups" -}}
{{- $root := . -}}
{{- $w := .Values.worker -}}
{{- $enabled := include "kafka-replicator.enabledDirections" . | fromJsonArray -}}
{{- $groups := list -}}
{{- if $w.groupPerDirection -}}
{{- range $d := $enabled -}}
{{- $name := ternary "source-to-target" "target-to-source" (eq $d "sourceToTarget") -}}
{{- $groups = append $groups (dict "name" $name "directions" (list $d) "members" (include "kafka-replicator.members" (list $root $d) | int64)) -}}
{{- end -}}
{{- else -}}
{{- $most := 0 -}}
{{- range $d := $enabled -}}
{{- $most = max $most (include "kafka-replicator.members" (list $root $d) | int64) -}}
{{- end -}}
{{- $groups = append $groups (dict "name" "replicators" "directions" $enabled "members" $most) -}}
{{- end -}}
{{- $out := list -}}
{{- range $g := $groups -}}
{{- $replicas := $g.members -}}
{{- if not (kindIs "invalid" $w.replicas) -}}{{- $replicas = int64 $w.replicas -}}{{- end -}}
{{- $min := $replicas -}}
{{- $max := $replicas -}}
{{- if $w.autoscaling.enabled -}}
{{- if not (kindIs "invalid" $w.autoscaling.minReplicas) -}}{{- $min = int64 $w.autoscaling.minReplicas -}}{{- end -}}
{{- $max = mul (max $replicas 1) 2 -}}
{{- if not (kindIs "invalid" $w.autoscaling.maxReplicas) -}}{{- $max = int64 $w.autoscaling.maxReplicas -}}{{- end -}}
{{- if gt $min $max -}}
{{- fail (printf "worker.autoscaling.minReplicas (%d) is greater than worker.autoscaling.maxReplicas (%d)" $min $max) -}}
{{- end -}}
{{- $replicas = min (max $replicas $min) $max -}}
{{- end -}}
{{- $out = append $out (dict "name" $g.name "directions" $g.directions "replicas" $replicas "minReplicas" $min "maxReplicas" $max) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Seconds Kubernetes waits between SIGTERM and SIGKILL. */}}
{{- define "kafka-replicator.terminationGracePeriodSeconds" -}}
{{- $shutdown := .Values.shutdownGracePeriodSeconds | default 30 | float64 | ceil | int64 -}}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) -}}
{{- $grace := int64 .Values.terminationGracePeriodSeconds -}}
{{- if le $grace $shutdown -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than shutdownGracePeriodSeconds (%d), or the driver is killed before its actors have stopped" $grace $shutdown) -}}
{{- end -}}
{{- $grace -}}
{{- else -}}
{{- add $shutdown 15 -}}
{{- end -}}
{{- end -}}

{{- define "kafka-replicator.preStopSleepSeconds" -}}
{{- if not (kindIs "invalid" .Values.ray.preStopSleepSeconds) -}}
{{- int64 .Values.ray.preStopSleepSeconds -}}
{{- else -}}
{{- add (.Values.shutdownGracePeriodSeconds | default 30 | float64 | ceil | int64) 5 -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------------------------
Pieces shared by the driver and the Ray pods
------------------------------------------------------------------------------ */}}

{{/* Environment: the Secrets the config refers to, then ray.env. */}}
{{- define "kafka-replicator.env" -}}
{{- range $side := list "sourceKafka" "targetKafka" }}
{{- $c := index $.Values $side | default dict }}
{{- range $what := list "saslPassword" "sslKeyPassword" }}
{{- with index $c (printf "%sSecret" $what) }}
- name: {{ include "kafka-replicator.secretEnvName" (list $side $what) }}
  valueFrom:
    secretKeyRef:
      name: {{ .name | quote }}
      key: {{ .key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.ray.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kafka-replicator.volumes" -}}
- name: config
  configMap:
    name: {{ include "kafka-replicator.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- range $side := list "sourceKafka" "targetKafka" }}
{{- with (index $.Values $side | default dict).tlsSecret }}
- name: tls-{{ trimSuffix "Kafka" $side }}
  secret:
    secretName: {{ .name | quote }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}

{{- define "kafka-replicator.volumeMounts" -}}
- name: config
  mountPath: /etc/kafka-replicator
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- range $side := list "sourceKafka" "targetKafka" }}
{{- with (index $.Values $side | default dict).tlsSecret }}
- name: tls-{{ trimSuffix "Kafka" $side }}
  mountPath: {{ include "kafka-replicator.tlsDir" $side }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* nodeSelector / tolerations / affinity of one role (head, worker, driver): the role's
own when set, else the top-level ones. */}}
{{- define "kafka-replicator.scheduling" -}}
{{- $root := index . 0 -}}
{{- $role := index $root.Values (index . 1) -}}
{{- with ($role.nodeSelector | default $root.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($role.tolerations | default $root.Values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($role.affinity | default $root.Values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "kafka-replicator.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
{{- if kindIs "string" . }}
  - name: {{ . | quote }}
{{- else }}
  - name: {{ .name | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* prometheus.io annotations for Ray pods. */}}
{{- define "kafka-replicator.rayPodAnnotations" -}}
{{- if and .Values.metrics.enabled .Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}
