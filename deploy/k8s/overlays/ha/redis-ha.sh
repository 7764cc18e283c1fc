#!/bin/sh
# The ha overlay's Redis pods (redis-0..2), each running a Redis node and a
# Sentinel from the official redis image:
#   sh redis-ha.sh node [redis-server args...]   the Redis node
#   sh redis-ha.sh sentinel                       this pod's Sentinel
#
# After the very first start, who is primary is the Sentinels' decision. This
# script only picks the role a (re)starting node starts in, so that a node
# coming back after a failover joins the new primary instead of competing
# with it, and the primary a new Sentinel starts watching. In order:
#   1. the primary a reachable Sentinel of another pod names (not this pod's
#      own: restarting beside the node, it may still hold a view from before a
#      failover it missed, and would name this very node);
#   2. else the one this pod's Sentinel last wrote into its config on the
#      volume (Sentinel rewrites it on every failover), so a restart of the
#      whole StatefulSet keeps the last promoted node;
#   3. else the first of REDIS_NODES (the very first start).
# Settings come from the redis-ha ConfigMap (kustomization.yaml), the password
# from the shop-secrets Secret.
set -eu

: "${POD_NAME:?}" "${REDIS_SERVICE:?}" "${REDIS_MASTER_NAME:?}" "${REDIS_NODES:?}"
: "${REDIS_PASSWORD:?}"
self="$POD_NAME.$REDIS_SERVICE"
# On the pod's volume (SENTINEL_DIR only moves it for tests/test_k8s_redis_ha.py).
sentinel_dir=${SENTINEL_DIR:-/data/sentinel}
sentinel_conf=$sentinel_dir/sentinel.conf

# The primary another pod's Sentinel names, if any (3 s per Sentinel at most).
primary_from_sentinels() {
    for node in $REDIS_NODES; do
        [ "$node" = "$self" ] && continue
        # Sentinels take the Redis password too (redis-cli reads REDISCLI_AUTH).
        answer=$(timeout 3 redis-cli -h "$node" -p 26379 --raw \
            SENTINEL get-master-addr-by-name "$REDIS_MASTER_NAME" 2>/dev/null | head -n 1) || true
        case "$answer" in
            "" | *[!A-Za-z0-9.-]*) ;;  # no answer, nil, or an error text
            *) echo "$answer"; return 0 ;;
        esac
    done
    return 1
}

# The primary this pod's Sentinel last knew, from its config on the volume.
primary_from_own_sentinel() {
    [ -s "$sentinel_conf" ] || return 1
    awk -v name="$REDIS_MASTER_NAME" \
        '$1 == "sentinel" && $2 == "monitor" && $3 == name { print $4; found = 1 } END { exit !found }' \
        "$sentinel_conf"
}

current_primary() {
    primary_from_sentinels || primary_from_own_sentinel || echo "${REDIS_NODES%% *}"
}

start_node() {
    # Required, not defaulted: a ConfigMap without them must not start a
    # node that silently lacks the write guard.
    : "${REDIS_MIN_REPLICAS_TO_WRITE:?}" "${REDIS_MIN_REPLICAS_MAX_LAG:?}"
    primary=$(current_primary)
    if [ "$primary" = "$self" ]; then
        echo "redis-ha: starting $self as the primary"
    else
        echo "redis-ha: starting $self as a replica of $primary"
        set -- "$@" --replicaof "$primary" 6379
    fi
    # Either node may become primary: the same password to serve and to
    # replicate; known to the others by its stable DNS name, not its pod IP;
    # a replica's full sync starts at once instead of after 5 s of batching;
    # and the write guard (kustomization.yaml says why), so whichever node is
    # primary refuses writes no replica can acknowledge.
    exec redis-server "$@" \
        --masterauth "$REDIS_PASSWORD" \
        --replica-announce-ip "$self" \
        --repl-diskless-sync-delay 0 \
        --min-replicas-to-write "$REDIS_MIN_REPLICAS_TO_WRITE" \
        --min-replicas-max-lag "$REDIS_MIN_REPLICAS_MAX_LAG"
}

start_sentinel() {
    : "${SENTINEL_QUORUM:?}" "${SENTINEL_DOWN_AFTER_MS:?}" "${SENTINEL_FAILOVER_TIMEOUT_MS:?}"
    mkdir -p "$sentinel_dir"
    # Written once: from then on Sentinel keeps it current itself.
    if [ ! -s "$sentinel_conf" ]; then
        primary=$(current_primary)
        echo "redis-ha: new Sentinel on $self, watching $primary"
        cat > "$sentinel_conf.new" <<CONF
port 26379
dir $sentinel_dir
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $self
sentinel monitor $REDIS_MASTER_NAME $primary 6379 $SENTINEL_QUORUM
sentinel down-after-milliseconds $REDIS_MASTER_NAME $SENTINEL_DOWN_AFTER_MS
sentinel failover-timeout $REDIS_MASTER_NAME $SENTINEL_FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $REDIS_MASTER_NAME 1
CONF
        mv "$sentinel_conf.new" "$sentinel_conf"
    fi
    # The password on every start, so a changed Secret reaches the Sentinels:
    # given to the nodes (auth-pass) and to the other Sentinels (sentinel-pass),
    # and asked of every client (requirepass: anyone who could reach an open
    # Sentinel could repoint the shop to a Redis of their own).
    grep -v -e "^sentinel auth-pass $REDIS_MASTER_NAME " -e "^sentinel sentinel-pass " \
        -e "^requirepass " "$sentinel_conf" > "$sentinel_conf.new" || true
    {
        echo "sentinel auth-pass $REDIS_MASTER_NAME $REDIS_PASSWORD"
        echo "sentinel sentinel-pass $REDIS_PASSWORD"
        echo "requirepass $REDIS_PASSWORD"
    } >> "$sentinel_conf.new"
    mv "$sentinel_conf.new" "$sentinel_conf"
    exec redis-server "$sentinel_conf" --sentinel
}

role=${1:-}
[ $# -gt 0 ] && shift
case "$role" in
    node) start_node "$@" ;;
    sentinel) start_sentinel ;;
    *) echo "usage: $0 node [redis-server args...] | sentinel" >&2; exit 2 ;;
esac
