#!/usr/bin/env bash
# The README's quick start, with all of its set-up. Idempotent: run it again
# and it only does what is missing.
#
#   ./run.sh up [shop-cluster up options]   start the whole cluster and print its URL
#   ./run.sh test [pytest options]          run the full test suite (ruff + pytest)
#   ./run.sh <shop-cluster subcommand>      e.g. ./run.sh status, ./run.sh demo, ./run.sh down
#
# Set-up: system packages with apt-get when they are missing (as root; anyone
# else is told what to install), a virtualenv in .venv, and the project
# installed into it (again only when pyproject.toml changed).
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
EXTRAS=test,bench,chart  # one virtualenv for running (the demo's chart), testing, benchmarking
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

have() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

# ensure_packages BINARY:PACKAGE ... installs the packages whose binary is missing.
ensure_packages() {
  local missing=() pair
  for pair in "$@"; do
    have "${pair%%:*}" || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing system packages: ${missing[*]}. Install them with: sudo apt-get install ${missing[*]}"
  fi
  have apt-get || die "missing ${missing[*]} and no apt-get here: install them with your package manager"
  say "Installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
  have python3 || ensure_packages python3:python3
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python 3.11 or newer is needed (found $(python3 --version))"
  if [ ! -x "$VENV/bin/python" ]; then
    # Debian ships venv's ensurepip separately, in python3-venv.
    python3 -c 'import ensurepip' 2>/dev/null || ensure_packages "no-such-binary:python3-venv"
    say "Creating the virtualenv in $VENV"
    python3 -m venv "$VENV"
  fi
  local extras=$1 stamp="$VENV/.installed-$1"
  local want; want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "Installing the project into $VENV (pip install -e '.[$extras]'; log: $VENV/pip.log)"
    if ! { "$VENV/bin/python" -m pip install --upgrade pip \
           && "$VENV/bin/python" -m pip install -e ".[$extras]"; } >"$VENV/pip.log" 2>&1; then
      tail -n 30 "$VENV/pip.log" >&2
      die "pip install failed; the whole log is in $VENV/pip.log"
    fi
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-help}
case "$cmd" in
  test)
    shift
    # docker.io and debootstrap: the docker tests boot docker-compose.yml on a
    # private dockerd with images made from Debian's packages.
    # ip, keepalived, nft, curl: the hosts tests (tests/test_cluster_hosts*.py)
    # make network namespaces, run VRRP between the load balancers (keepalived
    # checks its nginx with curl) and cut the network with an nftables table.
    ensure_packages redis-server:redis-server nginx:nginx chromium:chromium \
      docker-compose:docker-compose wrk:wrk dockerd:docker.io debootstrap:debootstrap \
      ip:iproute2 keepalived:keepalived nft:nftables curl:curl
    # Renders deploy/k8s (kubectl kustomize). It comes with these machines;
    # Debian's own kubernetes-client (1.20) is too old, so it is not installed here.
    have kubectl || say "kubectl not found: the Kubernetes manifest tests (tests/test_k8s.py) will be skipped; install kubectl 1.27+ to run them"
    ensure_venv "$EXTRAS"
    say "ruff check"
    "$VENV/bin/ruff" check .
    say "pytest"
    exec "$VENV/bin/pytest" "$@"
    ;;
  help|-h|--help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    ensure_packages redis-server:redis-server nginx:nginx
    ensure_venv "$EXTRAS"
    [ "$cmd" = up ] && say "Starting the cluster (shop-cluster up)"
    exec "$VENV/bin/shop-cluster" "$@"
    ;;
esac
