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
# Says how much disk is free where the build goes, and warns when it is less
# than a clean test build takes (about 5 GB of target/, with the venvs): a
# full disk otherwise shows only later, as a linker killed by SIGBUS.
report_disk() {
  local dir=$1 want_gb=$2 free_gb
  mkdir -p "$dir"
  free_gb=$(df -Pk "$dir" | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$want_gb" ]; then
    say "warning: only ${free_gb} GB free at $dir; a clean build of the tests takes about ${want_gb} GB"
  else
    say "${free_gb} GB free at $dir"
  fi
}

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

# Makes the venv at $1 and, when its requirements file $2 changed since the
# last install there, installs it with "$3 VENV REQUIREMENTS".
ensure_venv() {
  local venv=$1 req=$2 install=$3
  apt_install python3-venv
  [ -x "$venv/bin/python" ] || { say "creating $venv"; python3 -m venv "$venv"; }
  if [ ! -f "$venv/.requirements" ] || ! cmp -s "$req" "$venv/.requirements"; then
    say "installing ${req#"$STRATUS_ROOT"/} into $venv"
    "$install" "$venv" "$req"
    cp "$req" "$venv/.requirements"
  fi
}

pip_install_requirements() { "$1/bin/pip" install -q -r "$2"; }

ensure_test_venv() {
  # The Python tools the tests drive (the reference CloudStack client, moto's server).
  ensure_venv "$STRATUS_ROOT/.venv" "$STRATUS_ROOT/tests/requirements.txt" pip_install_requirements
  export STRATUS_TEST_VENV="$STRATUS_ROOT/.venv"
}

# checkov's bc-python-hcl2 and python-hcl2 install the same `hcl2` module, so
# python-hcl2 goes to VENV/hcl2 (the tests put it on PYTHONPATH) and the other
# lines into the venv.
pip_install_iac_requirements() {
  local venv=$1 req=$2
  grep -v -E '^[[:space:]]*(#|$|python-hcl2)' "$req" >"$venv/.requirements-venv"
  "$venv/bin/pip" install -q -r "$venv/.requirements-venv"
  rm -rf "$venv/hcl2"
  "$venv/bin/pip" install -q --target "$venv/hcl2" "$(grep -E '^python-hcl2' "$req")"
}

ensure_iac_venv() {
  # The Terraform checks' Python tools (tests/requirements-iac.txt: checkov, python-hcl2) in
  # their own venv, .venv-iac: checkov's exact pins must not fight moto's in .venv.
  ensure_venv "$STRATUS_ROOT/.venv-iac" "$STRATUS_ROOT/tests/requirements-iac.txt" pip_install_iac_requirements
  export STRATUS_IAC_VENV="$STRATUS_ROOT/.venv-iac"
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

rabbit_password_hash() {
  # RabbitMQ's rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)),
  # with a 4-byte random salt. Builtins and pipes only: the password is on no command line.
  local salt_hex pw_hex
  salt_hex="$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  pw_hex="$(printf '%s' "$1" | od -An -tx1 | tr -d ' \n')"
  local digest_hex
  digest_hex="$(printf "$(printf '%s' "$salt_hex$pw_hex" | sed 's/../\\x&/g')" | sha256sum | cut -d' ' -f1)"
  printf "$(printf '%s' "$salt_hex$digest_hex" | sed 's/../\\x&/g')" | base64 -w0
}

ensure_broker_user() {
  # Stratus's own broker user (STRATUS_AMQP_USER, default stratus) with rights on
  # its own vhost only (STRATUS_AMQP_VHOST, default stratus), its generated
  # password kept in $STRATUS_HOME/amqp-password (0600); guest is left alone.
  # Exports STRATUS_AMQP_URL and STRATUS_AMQP_VHOST for what runs next. An
  # operator who set STRATUS_AMQP_URL chose a broker and a user: nothing is done.
  if [ -n "${STRATUS_AMQP_URL:-}" ]; then
    say "using the broker at STRATUS_AMQP_URL"
    return 0
  fi
  local home="${STRATUS_HOME:-$HOME/.stratus}"
  local user="${STRATUS_AMQP_USER:-stratus}" vhost="${STRATUS_AMQP_VHOST:-stratus}"
  (umask 077 && mkdir -p "$home")
  chmod 0700 "$home"
  local file="$home/amqp-password"
  if [ ! -s "$file" ]; then
    (umask 077 && head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c 32 >"$file")
  fi
  chmod 0600 "$file"
  local password
  password="$(cat "$file")"
  [ ${#password} -ge 16 ] || die "$file does not hold a password: remove it and run this again"
  # Imported as definitions carrying only the password's salted hash: the
  # password itself is never on a command line.
  local defs
  defs="$(mktemp)"
  cat >"$defs" <<JSON
{"users":[{"name":"$user","password_hash":"$(rabbit_password_hash "$password")","hashing_algorithm":"rabbit_password_hashing_sha256","tags":""}],
 "vhosts":[{"name":"$vhost"}],
 "permissions":[{"user":"$user","vhost":"$vhost","configure":".*","write":".*","read":".*"}]}
JSON
  # rabbitmqctl reads the file as the rabbitmq user.
  if id rabbitmq >/dev/null 2>&1; then as_root chown rabbitmq "$defs"; fi
  as_root rabbitmqctl -q import_definitions "$defs" >/dev/null || { rm -f "$defs"; die "could not create the broker user $user"; }
  rm -f "$defs"
  export STRATUS_AMQP_URL="amqp://$user:$password@127.0.0.1:${RABBITMQ_NODE_PORT:-5672}"
  export STRATUS_AMQP_VHOST="$vhost"
  say "broker user $user on vhost $vhost (password in $file)"
}
