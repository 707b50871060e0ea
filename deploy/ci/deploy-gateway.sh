#!/usr/bin/env bash
# deploy/ci/deploy-gateway.sh - roll a new sluice image out to one Kubernetes
# environment with a canary pod first, and roll back automatically.
#   OVERLAY=deploy/k8s/overlays/ENV IMAGE=REGISTRY/sluice@sha256:... BAKE_SECONDS=300
#   [PROMETHEUS_URL=...] bash deploy/ci/deploy-gateway.sh
# 1. render the overlay with the new image (kustomize edit in a scratch copy);
# 2. apply a Deployment sluice-canary (one pod, same labels, so the Service
#    sends it its share of connections) made from the rendered Deployment
#    (deploy/tools/canary-manifest.mjs), wait until it is ready;
# 3. bake: for BAKE_SECONDS the canary must stay ready without restarts and no
#    critical alert may fire; else delete it and stop (the main Deployment was
#    never touched: that is the rollback);
# 4. promote: apply the whole rendered overlay (a rolling update of sluice
#    with maxUnavailable 0); if it does not complete, `kubectl rollout undo`;
# 5. delete the canary.
set -euo pipefail
: "${OVERLAY:?set OVERLAY}" "${IMAGE:?set IMAGE}"
BAKE_SECONDS=${BAKE_SECONDS:-300}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$ROOT/deploy/tools" && npm ci --no-audit --no-fund >/dev/null)
cp -r "$ROOT/deploy/k8s" "$work/k8s"
overlay=$work/k8s/${OVERLAY#deploy/k8s/}
# `kustomize edit set image` without a kustomize binary: patch the images entry
node "$ROOT/deploy/tools/canary-manifest.mjs" set-image "$overlay/kustomization.yaml" sluice "$IMAGE"
kubectl kustomize "$overlay" >"$work/rendered.yaml"
ns=$(sed -n 's/^namespace: //p' "$overlay/kustomization.yaml")
node "$ROOT/deploy/tools/canary-manifest.mjs" canary "$work/rendered.yaml" >"$work/canary.yaml"

echo "deploy: canary of $IMAGE in $ns"
kubectl apply -f "$work/canary.yaml"
if ! kubectl -n "$ns" rollout status deploy/sluice-canary --timeout=180s; then
	kubectl -n "$ns" delete deploy/sluice-canary --wait=false
	echo "deploy: the canary did not become ready: stopped, nothing promoted" >&2
	exit 1
fi

alerts() {
	[[ -n ${PROMETHEUS_URL:-} ]] || { echo 0; return; }
	curl -fsS --max-time 10 "$PROMETHEUS_URL/api/v1/query" \
		--data-urlencode "query=count(ALERTS{alertstate=\"firing\",severity=~\"critical|page\",namespace=\"$ns\"}) or vector(0)" |
		python3 -c 'import json,sys; print(int(float(json.load(sys.stdin)["data"]["result"][0]["value"][1])))'
}
end=$((SECONDS + BAKE_SECONDS))
while ((SECONDS < end)); do
	restarts=$(kubectl -n "$ns" get pods -l app.kubernetes.io/track=canary \
		-o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{"\n"}{end}' | awk '{s += $1} END {print s + 0}')
	ready=$(kubectl -n "$ns" get deploy/sluice-canary -o jsonpath='{.status.readyReplicas}')
	firing=$(alerts)
	if ((restarts > 0)) || [[ ${ready:-0} != 1 ]] || ((firing > 0)); then
		echo "deploy: ROLLBACK: canary restarts=$restarts ready=${ready:-0} alerts=$firing" >&2
		kubectl -n "$ns" delete deploy/sluice-canary
		exit 1
	fi
	sleep 15
done

echo "deploy: canary healthy for ${BAKE_SECONDS}s: promoting"
kubectl apply -f "$work/rendered.yaml"
if ! kubectl -n "$ns" rollout status deploy/sluice --timeout=600s; then
	echo "deploy: ROLLBACK: the rolling update did not complete" >&2
	kubectl -n "$ns" rollout undo deploy/sluice
	kubectl -n "$ns" rollout status deploy/sluice --timeout=600s || true
	kubectl -n "$ns" delete deploy/sluice-canary --ignore-not-found
	exit 1
fi
kubectl -n "$ns" delete deploy/sluice-canary --ignore-not-found
echo "deploy: $IMAGE is live in $ns"
