#!/usr/bin/env bash
# deploy/ci/canary-weights.sh - move a service's traffic from pool "stable" to
# pool "canary" in steps with `sluice ctl set service-weights`, on every
# gateway at once, and judge the canary between steps; on a bad verdict set
# the split back to stable=100 canary=0 and exit 1.
# (`sluice ctl rollout`, issue 12, will do this inside sluice; until then this
# loop is the rollout controller.)
#
# Gateways (one of):
#   NAMESPACE=ns        every pod app.kubernetes.io/name=sluice,component=gateway
#                       in the namespace, through `kubectl exec POD -- sluice ctl`
#   SLUICE_CTL="cmd"    one gateway: the command prefix that runs `sluice ctl`,
#                       e.g. "podman exec sluice-stack_sluice_1 sluice ctl"
# Settings:
#   SERVICE=web  STABLE=stable  CANARY=canary   the service and its two pools
#   STEPS="10 25 50 100"                        canary weights, out of 100
#   STEP_SECONDS=60                             wait after each step before judging
#   MAX_ERROR_RATE=0.02                         canary pool failures / requests over the
#                                               breaker window (10 s), summed over gateways
#   MIN_REQUESTS=20                             fewer: not judged on errors (said so)
#   PROMETHEUS_URL=http://...                   also roll back if an alert fires
#                                               (severity critical or page) meanwhile
set -uo pipefail

SERVICE=${SERVICE:-web}
STABLE=${STABLE:-stable}
CANARY=${CANARY:-canary}
STEPS=${STEPS:-10 25 50 100}
STEP_SECONDS=${STEP_SECONDS:-60}
MAX_ERROR_RATE=${MAX_ERROR_RATE:-0.02}
MIN_REQUESTS=${MIN_REQUESTS:-20}
PROMETHEUS_URL=${PROMETHEUS_URL:-}

say() { echo "canary: $*"; }

gateways=()
if [[ -n ${SLUICE_CTL:-} ]]; then
	gateways=("local")
elif [[ -n ${NAMESPACE:-} ]]; then
	mapfile -t gateways < <(kubectl -n "$NAMESPACE" get pods \
		-l app.kubernetes.io/name=sluice,app.kubernetes.io/component=gateway \
		--field-selector=status.phase=Running -o name)
else
	echo "canary: set NAMESPACE (Kubernetes) or SLUICE_CTL (one gateway)" >&2
	exit 2
fi
((${#gateways[@]})) || { echo "canary: no running gateway found" >&2; exit 1; }
say "${#gateways[@]} gateway(s); service $SERVICE: $STABLE -> $CANARY in steps: $STEPS"

# ctl GATEWAY ARGS... : sluice ctl on one gateway
ctl() {
	local g=$1
	shift
	if [[ $g == local ]]; then
		# shellcheck disable=SC2086 # SLUICE_CTL is a command prefix
		$SLUICE_CTL "$@"
	else
		kubectl -n "$NAMESPACE" exec "${g#pod/}" -c sluice -- sluice ctl "$@"
	fi
}

set_split() { # set_split CANARY_WEIGHT : on every gateway; fails if one refuses
	local w=$1 g rc=0
	for g in "${gateways[@]}"; do
		ctl "$g" set service-weights "$SERVICE" "$STABLE=$((100 - w))" "$CANARY=$w" >/dev/null || {
			echo "canary: $g refused the split $STABLE=$((100 - w)) $CANARY=$w" >&2
			rc=1
		}
	done
	return $rc
}

# canary_errors : prints "REQUESTS FAILURES" of the canary pool over the window, all gateways
canary_errors() {
	local g req=0 fail=0 line
	for g in "${gateways[@]}"; do
		line=$(ctl "$g" --json show servers "$CANARY" | /usr/bin/env python3 -c '
import json, sys
d = json.loads(sys.stdin.readline())
s = d.get("servers", [])
print(sum(x["window_requests"] for x in s), sum(x["window_failures"] for x in s))') || return 1
		req=$((req + ${line% *}))
		fail=$((fail + ${line#* }))
	done
	echo "$req $fail"
}

firing_alerts() { # prints the number of firing critical alerts, or nothing without Prometheus
	[[ -n $PROMETHEUS_URL ]] || return 0
	curl -fsS --max-time 10 "$PROMETHEUS_URL/api/v1/query" \
		--data-urlencode 'query=count(ALERTS{alertstate="firing",severity=~"critical|page"}) or vector(0)' |
		/usr/bin/env python3 -c 'import json,sys; print(int(float(json.load(sys.stdin)["data"]["result"][0]["value"][1])))'
}

rollback() {
	say "ROLLBACK: $*"
	if set_split 0; then
		say "rolled back: $STABLE=100 $CANARY=0 on every gateway"
	else
		say "rollback incomplete: set it by hand (sluice ctl set service-weights $SERVICE $STABLE=100 $CANARY=0)"
	fi
	exit 1
}

for w in $STEPS; do
	[[ $w =~ ^[0-9]+$ ]] && ((w <= 100)) || { echo "canary: bad step '$w' (0 to 100)" >&2; exit 2; }
	set_split "$w" || rollback "the split $w could not be set everywhere"
	say "step $w: $STABLE=$((100 - w)) $CANARY=$w; judging in ${STEP_SECONDS}s"
	sleep "$STEP_SECONDS"
	read -r req fail < <(canary_errors) || rollback "cannot read the canary pool's counters"
	if ((req >= MIN_REQUESTS)); then
		if /usr/bin/env python3 -c "import sys; sys.exit(0 if $fail / $req > $MAX_ERROR_RATE else 1)"; then
			rollback "canary error rate $fail/$req above $MAX_ERROR_RATE at step $w"
		fi
		say "step $w: canary $fail failures in $req requests: ok"
	else
		say "step $w: only $req canary requests in the window, fewer than $MIN_REQUESTS: not judged on errors"
	fi
	alerts=$(firing_alerts) || rollback "cannot query Prometheus at $PROMETHEUS_URL"
	if [[ -n $alerts ]] && ((alerts > 0)); then
		rollback "$alerts critical alert(s) firing at step $w"
	fi
done
say "done: $CANARY at ${w}%"
