#!/usr/bin/env bash
# Builds orch and runs its main job on the embedded defaults: `orch serve` with a SQLite file
# under ./data/. When API_KEYS is not set, a random write key is generated once, kept in
# ./data/dev-api-key (mode 600), and shown here so that you can call the API.
source "$(dirname "$0")/common.sh"

ensure_protoc
log "building orch (release)"
cargo build --release --locked -p orch

mkdir -p data
if [ -z "${API_KEYS:-}" ]; then
  if [ ! -s data/dev-api-key ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > data/dev-api-key)
  fi
  API_KEY="$(cat data/dev-api-key)"
  export API_KEYS="${API_KEY}:write"
  log "API key (from data/dev-api-key): ${API_KEY}"
  log "try: curl -H \"X-API-Key: ${API_KEY}\" http://${API_HOST:-127.0.0.1}:${API_PORT:-8000}/deployments"
fi
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
exec ./target/release/orch serve
