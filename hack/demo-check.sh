#!/usr/bin/env bash
# After `make demo` and then anything else (CI runs `make test` in between): the demo's release
# still serves the user's objects. Its run still lists as Succeeded, and a new run of its Task
# succeeds too.
source "$(dirname "$0")/cluster/lib.sh"
export KUBECONFIG=${KUBECONFIG:-$KUBECONFIG_PATH}
phase=$(kubectl get taskrun hello-world -o jsonpath='{.status.phase}')
[ "$phase" = Succeeded ] || die "taskrun/hello-world is '$phase', not Succeeded"
kubectl get taskruns
name=$(kubectl create -o name -f - <<'YAML'
apiVersion: kubetasks.io/v1alpha1
kind: TaskRun
metadata: {generateName: hello-again-}
spec: {taskRef: hello, payload: {name: again}}
YAML
)
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded "$name" --timeout=180s
log "the demo release still runs its Task: $name $(kubectl get "$name" -o jsonpath='{.status.result}')"
