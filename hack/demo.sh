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
log "helm install kubetasks ($image)"
helm upgrade --install kubetasks "$REPO/charts/kubetasks" --namespace kubetasks-system --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=$pull \
  --wait --timeout 3m
log "kubectl apply -f examples/hello.yaml"
sed -e "s|localhost/kubetasks/kubetasks:dev|$image|" -e "s|imagePullPolicy: Never|imagePullPolicy: $pull|" \
  "$REPO/examples/hello.yaml" | kubectl apply -f -
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded taskrun/hello-world --timeout=180s
kubectl get taskruns
kubectl get taskrun hello-world -o jsonpath='{.status.result}'; echo
log "done in $((SECONDS - start))s: export KUBECONFIG=$KUBECONFIG"
