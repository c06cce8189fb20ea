# Shared by scripts/run-local and scripts/test. Every step is idempotent.
set -euo pipefail

STRATUS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIN_RUST="1.94"

say() { printf '[stratus] %s\n' "$*" >&2; }
die() { printf '[stratus] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

require_rust() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust >= $MIN_RUST (https://rustup.rs), then run this again"
  local have
  have="$(rustc --version | awk '{print $2}')"
  if [ "$(printf '%s\n%s\n' "$MIN_RUST" "$have" | sort -V | head -n1)" != "$MIN_RUST" ]; then
    die "Rust $have is older than $MIN_RUST: run 'rustup update stable', then run this again"
  fi
}

apt_updated=no
apt_install() {
  # apt_install PACKAGE... : installs the Debian packages that are missing.
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them by hand"
  if [ "$apt_updated" = no ]; then
    say "apt-get update"
    as_root apt-get update -qq
    apt_updated=yes
  fi
  say "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

rabbitmq_running() {
  as_root rabbitmqctl -q await_startup --timeout 2 >/dev/null 2>&1
}

ensure_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  if rabbitmq_running; then
    say "RabbitMQ is running"
  else
    say "starting RabbitMQ"
    as_root rabbitmq-server -detached
    local i
    for i in $(seq 1 60); do
      if as_root rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; then break; fi
      sleep 1
    done
    rabbitmq_running || die "RabbitMQ did not start: see /var/log/rabbitmq/"
    say "RabbitMQ is up"
  fi
}

ensure_test_venv() {
  # The Python tools the tests drive (the reference CloudStack client, moto's server).
  apt_install python3-venv
  local venv="$STRATUS_ROOT/.venv" req="$STRATUS_ROOT/tests/requirements.txt"
  [ -x "$venv/bin/python" ] || { say "creating $venv"; python3 -m venv "$venv"; }
  if [ ! -f "$venv/.requirements" ] || ! cmp -s "$req" "$venv/.requirements"; then
    say "installing tests/requirements.txt into $venv"
    "$venv/bin/pip" install -q -r "$req"
    cp "$req" "$venv/.requirements"
  fi
  export STRATUS_TEST_VENV="$venv"
}

ensure_moto() {
  # moto's server stands in for DynamoDB in the tests (from the venv above).
  local port=5000
  if ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    say "starting moto's DynamoDB server on 127.0.0.1:$port"
    nohup "$STRATUS_TEST_VENV/bin/python" "$STRATUS_ROOT/scripts/moto_serial.py" 127.0.0.1 $port >"${TMPDIR:-/tmp}/stratus-moto.log" 2>&1 &
    local i
    for i in $(seq 1 100); do
      (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
      sleep 0.1
    done
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || die "moto did not start: see ${TMPDIR:-/tmp}/stratus-moto.log"
  fi
  export STRATUS_TEST_DYNAMODB="http://127.0.0.1:$port"
}
