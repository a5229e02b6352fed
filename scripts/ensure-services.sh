#!/usr/bin/env bash
# Make sure the local PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) used by the tests
# are up: check each, start whichever is down, wait (bounded) until it answers.
set -euo pipefail

WAIT_SECONDS="${WAIT_SECONDS:-30}"

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

start_postgres() {
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
}

start_redis() {
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

wait_for() { # name check
    local name=$1 check=$2 deadline=$((SECONDS + WAIT_SECONDS))
    until "$check"; do
        if ((SECONDS >= deadline)); then
            echo "ensure-services: $name did not come up within ${WAIT_SECONDS}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

ensure() { # name check start hint
    local name=$1 check=$2 start=$3 hint=$4
    if "$check"; then
        echo "ensure-services: $name is up"
        return 0
    fi
    for tool in ${hint}; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "ensure-services: $name is down and '$tool' is not installed" >&2
            return 1
        fi
    done
    echo "ensure-services: $name is down; starting it"
    if ! "$start"; then
        echo "ensure-services: starting $name failed (see above); waiting in case it is up" >&2
    fi
    if ! wait_for "$name" "$check"; then
        echo "ensure-services: FAILED: $name cannot be started; the tests that need it would fail" >&2
        return 1
    fi
    echo "ensure-services: $name is up"
}

status=0
ensure "PostgreSQL on 127.0.0.1:5432" postgres_up start_postgres "pg_isready pg_ctlcluster" || status=1
ensure "Redis on 127.0.0.1:6379" redis_up start_redis "redis-cli redis-server" || status=1
exit "$status"
