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
image=$("$REPO/hack/images/build.sh" app)
"$REPO/hack/images/import.sh" app
log "helm install kubetasks ($image)"
# The content-addressed tag: a rebuilt image rolls the operator on the next run.
helm upgrade --install kubetasks "$REPO/charts/kubetasks" --namespace kubetasks-system --create-namespace \
  --set image.tag="${image##*:}" --wait --timeout 3m
log "kubectl apply -f examples/hello.yaml"
kubectl apply -f "$REPO/examples/hello.yaml"
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded taskrun/hello-world --timeout=180s
kubectl get taskruns
kubectl get taskrun hello-world -o jsonpath='{.status.result}'; echo
log "done in $((SECONDS - start))s: export KUBECONFIG=$KUBECONFIG"
