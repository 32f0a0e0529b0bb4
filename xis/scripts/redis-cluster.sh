#!/usr/bin/env bash
# A local Redis Cluster for benchmarks and manual runs: three masters and three replicas on
# loopback, data and logs in DIR.
#   redis-cluster.sh start DIR [BASE_PORT]   # ports BASE_PORT..BASE_PORT+5 (default 7001)
#   redis-cluster.sh stop DIR
# Prints the seed URLs for `[redis] nodes` on start. The tests start their own cluster
# (xis/tests/support/redis_cluster.rs); this is for humans and benchmarks.
set -euo pipefail
command="${1:-}"
dir="${2:-}"
base="${3:-7001}"
if [ -z "$command" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop DIR [BASE_PORT]" >&2
  exit 2
fi
case "$command" in
  start)
    command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
    mkdir -p "$dir"
    addresses=()
    for i in 0 1 2 3 4 5; do
      port=$((base + i))
      mkdir -p "$dir/$port"
      redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file nodes.conf --cluster-node-timeout 1000 --appendonly no --save "" \
        --dir "$dir/$port" --logfile redis.log --daemonize yes --pidfile "$dir/$port/redis.pid"
      addresses+=("127.0.0.1:$port")
    done
    for i in 0 1 2 3 4 5; do
      for _ in $(seq 1 100); do
        redis-cli -p $((base + i)) ping >/dev/null 2>&1 && break
        sleep 0.1
      done
    done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
    for _ in $(seq 1 300); do
      redis-cli -p "$base" cluster info | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
    for i in 0 1 2 3 4 5; do printf 'redis://127.0.0.1:%s\n' $((base + i)); done
    ;;
  stop)
    for pidfile in "$dir"/*/redis.pid; do
      [ -f "$pidfile" ] || continue
      kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    ;;
  *)
    echo "usage: $0 start|stop DIR [BASE_PORT]" >&2
    exit 2
    ;;
esac
