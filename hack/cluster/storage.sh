#!/usr/bin/env bash
# Starts the local cluster's object store: SeaweedFS (`weed server`: master, volume server, filer
# and S3 gateway in one process), data under $STATE/seaweedfs. Only its S3 port is reachable from
# pods (NODE_IP and loopback); the master, volume server and filer answer on loopback only, since
# they have no authentication. One S3 identity, with a key made once per cluster, may use the
# bucket `kubetasks` and nothing else; anonymous requests are refused.
# Writes $STATE/storage.env (KUBETASKS_STORAGE_*, AWS_*), which the tests and `make demo` read.
# Run by up.sh (and so restart.sh seaweedfs); idempotent.
source "$(dirname "$0")/lib.sh"
NODE_IP=${NODE_IP:-$(node_ip)}
S3_PORT=${KUBETASKS_S3_PORT:-8333}
BUCKET=kubetasks
dir=$STATE/seaweedfs
env_file=$STATE/storage.env
mkdir -p "$dir" "$STATE/logs" "$STATE/pids"

# The key, made once per cluster; storage.env is written on every start (NODE_IP may change).
umask 077
if [ ! -f "$dir/key.env" ]; then
  printf 'AWS_ACCESS_KEY_ID=KT%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$(openssl rand -hex 9 | tr a-f A-F)" \
    "$(openssl rand -hex 20)" > "$dir/key.env.tmp"
  mv "$dir/key.env.tmp" "$dir/key.env"
fi
# shellcheck disable=SC1091
source "$dir/key.env"
cat > "$env_file.tmp" <<ENV
KUBETASKS_STORAGE_URL=s3://$BUCKET
KUBETASKS_STORAGE_ENDPOINT=http://$NODE_IP:$S3_PORT
KUBETASKS_STORAGE_REGION=us-east-1
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
ENV
mv "$env_file.tmp" "$env_file"
# The identity's actions name the bucket: it cannot create, list or touch others.
cat > "$dir/s3.json" <<JSON
{"identities": [{"name": "kubetasks",
  "credentials": [{"accessKey": "$AWS_ACCESS_KEY_ID", "secretKey": "$AWS_SECRET_ACCESS_KEY"}],
  "actions": ["Read:$BUCKET", "Write:$BUCKET", "List:$BUCKET", "Tagging:$BUCKET"]}]}
JSON

# Master, volume server and filer on loopback (their gRPC ports: +10000); S3 everywhere. A single
# master resumes at once (a raft election took 18 s on restart), stops in a second (not 10),
# and reports nothing to anyone.
# Without the caller's AWS_* variables: weed makes an admin identity of them.
start seaweedfs env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
  weed server -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.peers=none -master.telemetry=false \
  -master.port=9333 -volume.port=8480 -filer.port=8888 -volume.max=0 -master.volumeSizeLimitMB=1024 \
  -volume.preStopSeconds=1 \
  -s3 -s3.port="$S3_PORT" -s3.ip.bind=0.0.0.0 -s3.config="$dir/s3.json" -s3.iam=false \
  -s3.port.iceberg=0 -s3.port.lance=0
# The bucket, once, through the filer (no S3 identity may create buckets).
bucket() {
  echo "s3.bucket.list" | weed shell -master=127.0.0.1:9333 -filer=127.0.0.1:8888 2>/dev/null | grep -qw "$BUCKET" ||
    echo "s3.bucket.create -name $BUCKET -owner kubetasks" | weed shell -master=127.0.0.1:9333 -filer=127.0.0.1:8888 2>&1 |
      grep -q "create bucket under"
}
wait_for "SeaweedFS's bucket $BUCKET" 60 bucket
# Anonymous requests are answered (403) once the S3 gateway listens.
wait_for "SeaweedFS's S3 gateway" 60 curl -sS -o /dev/null "http://$NODE_IP:$S3_PORT/$BUCKET"
log "object store: s3://$BUCKET at http://$NODE_IP:$S3_PORT (credentials in $env_file)"
