#!/bin/sh
# Starts a pod of the StatefulSet `redis` (`start.sh server`) or `redis-sentinel` (`start.sh
# sentinel`), following the master the sentinels name, else the server that says it is the master;
# when none does (the first start), redis-0. Each pod goes by its stable name (redis-N.redis,
# redis-sentinel-N.redis-sentinel), which the sentinels and the proxy use.
set -eu
role=$1
case $role in
    server) me="$(hostname).redis" ;;
    sentinel) me="$(hostname).redis-sentinel" ;;
    *) echo "usage: start.sh server|sentinel" >&2; exit 64 ;;
esac
master=""
for s in redis-sentinel-0 redis-sentinel-1 redis-sentinel-2; do
    [ "$s.redis-sentinel" = "$me" ] && continue
    # The sentinels have no password (the servers' is for the servers).
    master=$(env -u REDISCLI_AUTH redis-cli -h "$s.redis-sentinel" -p 26379 --raw \
        SENTINEL get-master-addr-by-name mymaster 2>/dev/null | head -n 1) || true
    [ -n "$master" ] && break
done
# No sentinel answers (all of them restarting): a server that says it is the master, so that a
# restarted redis-0 does not make a second one; on the very first start none does.
export REDISCLI_AUTH="$REDIS_PASSWORD"
if [ -z "$master" ]; then
    for r in redis-0 redis-1 redis-2; do
        [ "$r.redis" = "$me" ] && continue
        if redis-cli -h "$r.redis" INFO replication 2>/dev/null | grep -q '^role:master'; then
            master="$r.redis"
            break
        fi
    done
fi
[ -n "$master" ] || master=redis-0.redis

if [ "$role" = server ]; then
    {
        echo "port 6379"
        echo "dir /data"
        echo "replica-announce-ip $me"
        echo "requirepass $REDIS_PASSWORD"
        echo "masterauth $REDIS_PASSWORD"
        [ "$master" = "$me" ] || echo "replicaof $master 6379"
    } >/conf/redis.conf
    exec redis-server /conf/redis.conf
fi

# resolve-hostnames: the monitored name must resolve when the config is read. Sentinel rewrites
# its config, so it lives in an emptyDir.
until getent hosts "$master" >/dev/null; do
    echo "waiting for $master to resolve" >&2
    sleep 2
done
cat >/conf/sentinel.conf <<CONF
port 26379
dir /conf
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor mymaster $master 6379 2
sentinel auth-pass mymaster $REDIS_PASSWORD
sentinel down-after-milliseconds mymaster 5000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
CONF
exec redis-sentinel /conf/sentinel.conf
