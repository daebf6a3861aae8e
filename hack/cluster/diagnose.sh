#!/usr/bin/env bash
# What the local cluster looks like now, in under a hundred lines: the machine, the nodes, pods
# stuck on the real node, recent Warning events and the errors in each component's log. CI prints
# it when the tests fail, before the cluster is torn down with the evidence.
source "$(dirname "$0")/lib.sh"
set +e
KUBECTL=(timeout 20 kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=15s)
NODE_NAME=${NODE_NAME:-kubetasks-node}

section() { printf '\n--- %s\n' "$*"; }

section "machine: $(date +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
free -m | head -2
df -h / "$STATE" 2>/dev/null | awk 'NR == 1 || !seen[$0]++' | uniq
section "components not running"
for f in "$STATE"/pids/*.pid; do
  name=$(basename "$f" .pid)
  running "$name" || echo "$name (pid $(cat "$f")) is gone"
done
section "nodes"
"${KUBECTL[@]}" get nodes -o wide
"${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
section "pods on $NODE_NAME that are neither Running nor finished"
"${KUBECTL[@]}" get pods -A -o wide --field-selector "spec.nodeName=$NODE_NAME,status.phase!=Running,status.phase!=Succeeded,status.phase!=Failed" | head -15
echo "containerd tasks: $(timeout 20 ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>&1 | wc -l)"
section "the last Warning events"
"${KUBECTL[@]}" get events -A --field-selector type=Warning --sort-by=.lastTimestamp 2>&1 | tail -12 | cut -c1-220
for name in kubelet containerd kube-apiserver etcd kube-controller-manager kwok seaweedfs; do
  log=$STATE/logs/$name.log
  [ -f "$log" ] || continue
  section "$name: the last errors of $(wc -l < "$log") log lines"
  # klog's E lines, containerd's level=error and Go panics; the last few, cut to a screen's width
  grep -E '^E[0-9]{4} |level=(error|fatal)|^panic:|^fatal error:' "$log" | tail -6 | cut -c1-240
done
