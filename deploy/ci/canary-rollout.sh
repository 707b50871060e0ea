#!/usr/bin/env bash
# deploy/ci/canary-rollout.sh - the pipeline's application canary: starts
# `sluice ctl rollout` (sluice moves the service's split towards the canary
# pool step by step and judges the canary on its own counters, rolling back
# at once on a bad step), follows it to the end, and exits 0 when every
# gateway completed, 1 when one rolled back, was aborted or stopped, or when
# a critical alert fired meanwhile (then it aborts the rollout everywhere:
# back to the weights from before it).
#
# Gateways (one of):
#   NAMESPACE=ns        every pod app.kubernetes.io/name=sluice,component=gateway
#                       in the namespace, through `kubectl exec POD -- sluice ctl`
#   SLUICE_CTL="cmd"    one gateway: the command prefix that runs `sluice ctl`,
#                       e.g. "podman exec sluice-stack_sluice_1 sluice ctl"
# Without fleet-wide control each gateway runs its own rollout, judged on its
# own traffic; with `control = { redis = ... }` in the config set FLEET=1: the
# rollout is started on one gateway and the fleet follows it.
# Settings (the `sluice ctl rollout start` options, docs/admin.md):
#   SERVICE=web  CANARY=canary         the service and the canary pool
#   STEPS="5,25,50,100"                canary shares in percent (commas or spaces)
#   INTERVAL=60s                       each step's judging interval
#   MAX_ERROR_RATE=1%  MAX_P99=500ms   limits (MAX_P99 empty: no latency limit)
#   MIN_REQUESTS=100                   canary attempts needed to judge a step
#   POLL_SECONDS=5                     how often the status is read
#   TIMEOUT_SECONDS                    give up (abort) after this; default: 4 intervals per step + 120
#   PROMETHEUS_URL=http://...          also abort if an alert of severity critical
#                                      or page fires meanwhile
set -uo pipefail

SERVICE=${SERVICE:-web}
CANARY=${CANARY:-canary}
STEPS=${STEPS:-5,25,50,100}
STEPS=${STEPS// /,}
INTERVAL=${INTERVAL:-60s}
MAX_ERROR_RATE=${MAX_ERROR_RATE:-1%}
MAX_P99=${MAX_P99:-500ms}
MIN_REQUESTS=${MIN_REQUESTS:-100}
POLL_SECONDS=${POLL_SECONDS:-5}
PROMETHEUS_URL=${PROMETHEUS_URL:-}
FLEET=${FLEET:-0}

say() { echo "canary: $*"; }

interval_seconds() { # "90s" "2m" "500ms" -> whole seconds, at least 1
	local v=$1
	case $v in
	*ms) echo $((${v%ms} / 1000 + 1)) ;;
	*s) echo "${v%s}" ;;
	*m) echo $((${v%m} * 60)) ;;
	*h) echo $((${v%h} * 3600)) ;;
	*) echo "$v" ;;
	esac
}
nsteps=$(tr ',' '\n' <<<"$STEPS" | grep -c .)
isec=$(interval_seconds "$INTERVAL")
[[ $isec =~ ^[0-9]+$ ]] || { echo "canary: INTERVAL=$INTERVAL is not a duration like 60s" >&2; exit 2; }
TIMEOUT_SECONDS=${TIMEOUT_SECONDS:-$((nsteps * isec * 4 + 120))}

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

starters=("${gateways[@]}")
[[ $FLEET == 1 ]] && starters=("${gateways[0]}")
say "${#gateways[@]} gateway(s); service $SERVICE to $CANARY in steps $STEPS, $INTERVAL each$([[ $FLEET == 1 ]] && echo ", fleet-wide")"

# state GATEWAY : prints "STATE<TAB>STEP<TAB>VERDICT" of the service's rollout
state() {
	ctl "$1" --json rollout status "$SERVICE" | /usr/bin/env python3 -c '
import json, sys
d = json.load(sys.stdin)
r = (d.get("rollouts") or [{}])[0]
print("%s\t%s\t%s" % (r.get("state", "none"), r.get("step", "?"), r.get("verdict", "")))'
}

abort_all() { # every gateway whose rollout still runs: back to the weights from before it
	local g out
	for g in "${gateways[@]}"; do
		case $(state "$g" 2>/dev/null | cut -f1) in
		running | paused)
			if out=$(ctl "$g" rollout abort "$SERVICE" 2>&1); then
				say "$g: $out"
			else
				say "$g: abort failed: $out"
			fi
			;;
		esac
	done
}

fail() {
	say "ROLLBACK: $*"
	abort_all
	exit 1
}

args=(rollout start "$SERVICE" --to "$CANARY" --steps "$STEPS" --interval "$INTERVAL"
	--max-error-rate "$MAX_ERROR_RATE" --min-requests "$MIN_REQUESTS")
[[ -n $MAX_P99 ]] && args+=(--max-p99 "$MAX_P99")
for g in "${starters[@]}"; do
	out=$(ctl "$g" "${args[@]}") || fail "$g refused the rollout: $out"
	say "$g: $out"
done

firing_alerts() { # prints the number of firing critical alerts, or nothing without Prometheus
	[[ -n $PROMETHEUS_URL ]] || return 0
	curl -fsS --max-time 10 "$PROMETHEUS_URL/api/v1/query" \
		--data-urlencode 'query=count(ALERTS{alertstate="firing",severity=~"critical|page"}) or vector(0)' |
		/usr/bin/env python3 -c 'import json,sys; print(int(float(json.load(sys.stdin)["data"]["result"][0]["value"][1])))'
}

deadline=$((SECONDS + TIMEOUT_SECONDS))
last=""
while :; do
	done_count=0
	report=""
	for g in "${gateways[@]}"; do
		line=$(state "$g") || fail "cannot read the rollout status of $g"
		IFS=$'\t' read -r st step verdict <<<"$line"
		report+="$g: $st step $step; "
		case $st in
		completed) done_count=$((done_count + 1)) ;;
		running | paused) ;;
		rolled_back) fail "$g rolled the canary back at step $step: $verdict" ;;
		*) fail "$g: rollout $st at step $step: $verdict" ;;
		esac
	done
	[[ $report != "$last" ]] && say "${report%; }"
	last=$report
	if ((done_count == ${#gateways[@]})); then
		say "done: $CANARY at 100% on every gateway"
		exit 0
	fi
	alerts=$(firing_alerts) || fail "cannot query Prometheus at $PROMETHEUS_URL"
	if [[ -n $alerts ]] && ((alerts > 0)); then
		fail "$alerts critical alert(s) firing"
	fi
	((SECONDS < deadline)) || fail "not finished after ${TIMEOUT_SECONDS}s"
	sleep "$POLL_SECONDS"
done
