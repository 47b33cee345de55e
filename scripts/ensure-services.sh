#!/usr/bin/env bash
# Start PostgreSQL and Redis on 127.0.0.1 if they are down, then wait until
# both respond. The tests use these real servers.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
    echo "PostgreSQL is down; starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
if ! redis_up; then
    echo "Redis is down; starting it"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 60); do
    if pg_up && redis_up; then
        exit 0
    fi
    sleep 1
done
echo "error: PostgreSQL or Redis did not respond on 127.0.0.1 within 60 s" >&2
exit 1
