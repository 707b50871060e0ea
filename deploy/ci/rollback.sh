#!/usr/bin/env bash
# deploy/ci/rollback.sh - put an environment back (rollback.yml): the gateway
# to its previous ReplicaSet, no canary pod, and every gateway's split of the
# service back to all-stable.
#   NAMESPACE=sluice-prod REASON="..." [SERVICE=web STABLE=stable CANARY=canary]
# (`rollout abort` fails when no rollout is running: that is fine.)
set -euo pipefail
: "${NAMESPACE:?set NAMESPACE}" "${REASON:?say why}"
SERVICE=${SERVICE:-web}
echo "rollback of $NAMESPACE: $REASON"
kubectl -n "$NAMESPACE" delete deploy/sluice-canary --ignore-not-found
kubectl -n "$NAMESPACE" rollout undo deploy/sluice
kubectl -n "$NAMESPACE" rollout status deploy/sluice --timeout=600s
STABLE=${STABLE:-stable}
CANARY=${CANARY:-canary}
# every gateway: stop a rollout in progress, then the split to all-stable
for pod in $(kubectl -n "$NAMESPACE" get pods -l app.kubernetes.io/name=sluice,app.kubernetes.io/component=gateway \
	--field-selector=status.phase=Running -o name); do
	kubectl -n "$NAMESPACE" exec "${pod#pod/}" -c sluice -- sluice ctl rollout abort "$SERVICE" || true
	kubectl -n "$NAMESPACE" exec "${pod#pod/}" -c sluice -- \
		sluice ctl set service-weights "$SERVICE" "$STABLE=100" "$CANARY=0"
done
kubectl -n "$NAMESPACE" rollout history deploy/sluice | tail -n 3
