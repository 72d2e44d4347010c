#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, and the whole test suite on SQLite and on
# PostgreSQL. Uses the PostgreSQL in TEST_DATABASE_URL, else the one on 127.0.0.1:5432, else
# installs and starts one; uses the Docker Engine that answers on /var/run/docker.sock, else
# installs Debian's docker.io and starts dockerd, and builds the container tests' image. When the shared OpenStack testbed is beside the project
# (../shared/testbeds/openstack), it is started (installed first if need be) while the rest
# builds and runs, and orch's real-cloud suite and fakecloud's contract test run against it,
# as admin and as an ordinary member.
source "$(dirname "$0")/common.sh"

ensure_postgres() {
  if [ -n "${TEST_DATABASE_URL:-}" ]; then
    return
  fi
  if port_open 5432; then
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
    return
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  local version
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  log "starting PostgreSQL ${version}"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster "$version" main start
  for _ in $(seq 1 50); do port_open 5432 && break; sleep 0.2; done
  # The packaged cluster wants a password over TCP; give the superuser a test-only one.
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'orch-test'\"" >/dev/null
  export TEST_DATABASE_URL="postgres://postgres:orch-test@127.0.0.1:5432/postgres"
}

drop_old_test_databases() {
  command -v psql >/dev/null 2>&1 || return 0
  psql "$TEST_DATABASE_URL" -Atq -c "SELECT datname FROM pg_database WHERE datname LIKE 'orch_test_%'" 2>/dev/null |
    while read -r name; do psql "$TEST_DATABASE_URL" -q -c "DROP DATABASE IF EXISTS \"$name\"" >/dev/null 2>&1 || true; done
}

TESTBED="${ORCH_TESTBED:-$ROOT/../shared/testbeds/openstack}"
TESTBED_LOG="$ROOT/target/testbed-up.log"
TESTBED_PID=""

# Starts the testbed in the background; its packages are installed after ours, so that two
# apt-get runs never contend for the lock.
start_testbed() {
  if [ ! -f "$TESTBED/up.sh" ]; then
    log "the real-cloud tests will be skipped: no OpenStack testbed at $TESTBED"
    return
  fi
  mkdir -p "$ROOT/target"
  log "starting the OpenStack testbed in the background (log: target/testbed-up.log)"
  (cd "$TESTBED" && OSA_SERVICES="placement glance neutron nova cinder" bash ./up.sh) >"$TESTBED_LOG" 2>&1 &
  TESTBED_PID=$!
}

# A freshly started Cinder may fail its first volumes (its scheduler has no pool stats yet):
# make and delete a 1 GB volume until one becomes available, for at most three minutes.
wait_for_block_storage() {
  local os=("$OPENSTACK_CLI" --os-cloud acceptance) id status
  export OS_CLIENT_CONFIG_FILE="$TESTBED/clouds.yaml"
  log "waiting until the testbed's Cinder makes volumes"
  for _ in $(seq 1 12); do
    id="$("${os[@]}" volume create --size 1 orch-warm-up -f value -c id 2>/dev/null)" || { sleep 5; continue; }
    for _ in $(seq 1 30); do
      status="$("${os[@]}" volume show "$id" -f value -c status 2>/dev/null || echo gone)"
      [ "$status" = available ] || [ "$status" = error ] && break
      sleep 1
    done
    "${os[@]}" volume delete "$id" >/dev/null 2>&1 || true
    [ "$status" = available ] && return 0
    sleep 5
  done
  echo "the testbed's Cinder made no volume in three minutes" >&2
  exit 1
}

run_real_cloud_tests() {
  [ -n "$TESTBED_PID" ] || { log "real-cloud tests skipped: no OpenStack testbed"; return; }
  log "waiting for the OpenStack testbed"
  if ! wait "$TESTBED_PID"; then
    tail -n 40 "$TESTBED_LOG" >&2
    echo "the OpenStack testbed did not start; see target/testbed-up.log" >&2
    exit 1
  fi
  wait_for_block_storage
  log "real-cloud suite and contract test (admin and member)"
  # --workspace: the features of the run above, so that nothing is built again.
  OS_CLIENT_CONFIG_FILE="$TESTBED/clouds.yaml" ORCH_TEST_CLOUDS="acceptance,acceptance-demo" \
    cargo test --locked --workspace --test realcloud -- --ignored --nocapture
}

ensure_protoc
ensure_postgres
drop_old_test_databases
ensure_python_tools
ensure_schemathesis
ensure_sshd
ensure_promtool
ensure_k8s_tools
ensure_docker
ensure_busybox_image
ensure_service_images
ensure_registry
start_testbed
log "PostgreSQL for tests: ${TEST_DATABASE_URL%%@*}@…"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
log "cargo test (SQLite and PostgreSQL)"
cargo test --locked --workspace
run_real_cloud_tests
