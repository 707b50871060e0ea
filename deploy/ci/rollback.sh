#!/usr/bin/env bash
# deploy/ci/rollback.sh - put an environment back (rollback.yml): the gateway
# to its previous ReplicaSet, no canary pod, and every gateway's split of the
# service back to all-stable.
#   NAMESPACE=sluice-prod REASON="..." [SERVICE=web STABLE=stable CANARY=canary]
set -euo pipefail
: "${NAMESPACE:?set NAMESPACE}" "${REASON:?say why}"
SERVICE=${SERVICE:-web}
echo "rollback of $NAMESPACE: $REASON"
kubectl -n "$NAMESPACE" delete deploy/sluice-canary --ignore-not-found
kubectl -n "$NAMESPACE" rollout undo deploy/sluice
kubectl -n "$NAMESPACE" rollout status deploy/sluice --timeout=600s
STEPS=0 STEP_SECONDS=0 MIN_REQUESTS=1000000000 SERVICE=$SERVICE NAMESPACE=$NAMESPACE \
	bash "$(dirname "${BASH_SOURCE[0]}")/canary-weights.sh"
kubectl -n "$NAMESPACE" rollout history deploy/sluice | tail -n 3
