#!/usr/bin/env bash
# The main job on the embedded defaults: builds orch, starts `orch dev` (API, relay and worker
# in one process; SQLite under ./data; a local Temporal dev server; fakecloud as the cloud
# unless OPENSTACK_* or OS_CLOUD name a real one), deploys seed 001's web-app-stack with live
# progress, then the two-tier container stack on the local Docker Engine (started if need be),
# and keeps orch running until Ctrl-C.
source "$(dirname "$0")/common.sh"

ensure_protoc
ensure_python_tools
ensure_docker
ensure_busybox_image
log "building orch (release)"
cargo build --release --locked -p orch

export API_PORT="${API_PORT:-8000}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}" LOG_LEVEL="${LOG_LEVEL:-warn}"
./target/release/orch dev &
orch_pid=$!
trap 'kill "$orch_pid" 2>/dev/null; wait "$orch_pid" 2>/dev/null' EXIT INT TERM

export ORCH_URL="http://127.0.0.1:${API_PORT}"
for _ in $(seq 1 150); do
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$ORCH_URL/health/ready" 2>/dev/null && break
  kill -0 "$orch_pid" 2>/dev/null || { echo "orch dev stopped" >&2; exit 1; }
  sleep 0.2
done

log "deploying examples/web-app-stack.yaml as 'web-app-demo'"
if ./target/release/orch get web-app-demo >/dev/null 2>&1; then
  ./target/release/orch get web-app-demo
else
  ./target/release/orch deploy examples/web-app-stack.yaml --name web-app-demo --wait
fi
log "deploying examples/two-tier-services.yaml (containers on the local engine) as 'two-tier-demo'"
if ./target/release/orch get two-tier-demo >/dev/null 2>&1; then
  ./target/release/orch get two-tier-demo
else
  ./target/release/orch deploy examples/two-tier-services.yaml --name two-tier-demo --wait
fi
log "orch is running at $ORCH_URL (key in data/dev-api-key); try: ./target/release/orch list — Ctrl-C stops it"
wait "$orch_pid"
