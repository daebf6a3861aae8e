#!/usr/bin/env bash
# From a fresh machine to a finished TaskRun: the local cluster (unless $KUBECONFIG already
# points at a reachable cluster), the kubetasks image, `helm install`, and the hello example.
source "$(dirname "$0")/cluster/lib.sh"
start=$SECONDS
if [ -n "${KUBECONFIG:-}" ] && [ "$KUBECONFIG" != "$KUBECONFIG_PATH" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
  log "using the cluster of KUBECONFIG=$KUBECONFIG"
  "$REPO/hack/cluster/build.sh" helm kubernetes
else
  "$REPO/hack/cluster/up.sh"
  export KUBECONFIG=$KUBECONFIG_PATH
fi
if [ "$KUBECONFIG" = "$KUBECONFIG_PATH" ]; then
  # The content-addressed tag, imported into the local node: a rebuilt image rolls the operator.
  image=$("$REPO/hack/images/build.sh" app)
  "$REPO/hack/images/import.sh" app
  pull=Never
else
  # Another cluster's nodes cannot see local images: it needs one pushed to a registry.
  image=${KUBETASKS_IMAGE:?"set KUBETASKS_IMAGE to the kubetasks image in a registry this cluster pulls from (hack/images/build.sh app writes it as an OCI archive under .cache/images/)"}
  pull=IfNotPresent
fi
# The local cluster's object store (SeaweedFS, hack/cluster/storage.sh), its key in a Secret.
store=()
if [ "$KUBECONFIG" = "$KUBECONFIG_PATH" ] && [ -f "$STATE/storage.env" ]; then
  # shellcheck disable=SC1091
  source "$STATE/storage.env"  # not exported: read here only
  bucket=${KUBETASKS_STORAGE_URL#s3://}; bucket=${bucket%%/*}
  kubectl create namespace kubetasks-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl create secret generic kubetasks-store -n kubetasks-system --dry-run=client -o yaml \
    --from-env-file=<(grep -E '^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY)=' "$STATE/storage.env") | kubectl apply -f - >/dev/null
  store=(--set storage.type=s3 --set storage.bucket="$bucket" --set storage.endpoint="$KUBETASKS_STORAGE_ENDPOINT"
         --set storage.region="$KUBETASKS_STORAGE_REGION" --set storage.credentialsSecret=kubetasks-store)
  log "object store: s3://$bucket at $KUBETASKS_STORAGE_ENDPOINT"
fi
log "helm install kubetasks ($image)"
helm upgrade --install kubetasks "$REPO/charts/kubetasks" --namespace kubetasks-system --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=$pull \
  "${store[@]}" --wait --timeout 3m
log "kubectl apply -f examples/hello.yaml"
sed -e "s|localhost/kubetasks/kubetasks:dev|$image|" -e "s|imagePullPolicy: Never|imagePullPolicy: $pull|" \
  "$REPO/examples/hello.yaml" | kubectl apply -f -
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded taskrun/hello-world --timeout=180s
kubectl get taskruns
kubectl get taskrun hello-world -o jsonpath='{.status.result}'; echo
log "done in $((SECONDS - start))s: export KUBECONFIG=$KUBECONFIG"
