#!/bin/bash
# The nginx container's entry point in docker-compose.yml: nginx in the
# foreground, and a loop that follows `docker compose up --scale shop=N`.
#
#   follow-replicas.sh           run nginx (as PID 1) and follow the replicas
#   follow-replicas.sh --health  exit 0 when nginx answers /nginx-health (healthcheck)
#
# Why a loop: nginx/docker.conf names the replicas with one server line,
# `server shop:8000`. nginx resolves that name when it loads its configuration
# and makes one upstream peer of every address, i.e. of every replica: each
# keeps its own passive health, and a request that fails on one is retried on
# the next (proxy_next_upstream ... non_idempotent). It never resolves the name
# again by itself (`resolve` on a server needs nginx 1.27.3+, Debian has 1.22;
# a variable in proxy_pass would re-resolve, but to a single peer, and a single
# peer cannot be retried on another replica). So this loop asks Docker's DNS
# for the replicas every FOLLOW_INTERVAL seconds and, when the set changed, has
# nginx reload: new workers resolve the new set, old workers finish their
# requests first. Between a change and the reload, nginx's own retries cover a
# replica that is gone (refused or timed out after proxy_connect_timeout, then
# marked failed for fail_timeout).
#
# Only bash, getent (glibc) and the nginx binary are used: the official nginx
# image and one built from Debian's packages both have them.
set -u

SERVICE=${SHOP_SERVICE:-shop}      # the compose service whose replicas nginx balances
INTERVAL=${FOLLOW_INTERVAL:-1}     # seconds; a DNS query to Docker's resolver is cheap
HEALTH_PORT=${NGINX_PORT:-8080}    # where nginx/docker.conf listens

log() { echo "follow-replicas: $*" >&2; }

health() {
    # bash's /dev/tcp: the official nginx image has neither curl nor wget.
    exec 3<>"/dev/tcp/127.0.0.1/$HEALTH_PORT" || exit 1
    printf 'GET /nginx-health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    local status
    IFS= read -r -t 2 status <&3 || exit 1
    [[ $status == "HTTP/1.1 200"* ]]
}

# The replicas' addresses, sorted, one line; empty when the name does not resolve.
replicas() {
    getent ahostsv4 "$SERVICE" | awk '{ print $1 }' | sort -u | tr '\n' ' '
}

follow() {
    local known=$1 latest
    while sleep "$INTERVAL"; do
        latest=$(replicas)
        # No replica at all: keep the last set (a reload would fail on the name).
        if [[ -z $latest || $latest == "$known" ]]; then
            continue
        fi
        log "$SERVICE is now: $latest- reloading nginx"
        if nginx -s reload; then
            known=$latest
        fi
    done
}

if [[ ${1:-} == --health ]]; then
    health
    exit
fi

# Resolved before nginx starts, so a change after this is always seen as one.
known=$(replicas)
log "$SERVICE is: ${known:-(nothing yet)}"
follow "$known" &
exec nginx -g 'daemon off;'
