#!/usr/bin/env bash
# A 3-member etcd cluster on loopback, for the benchmark's baseline.
#
#   scripts/etcd-cluster.sh install          install etcd from the distribution's packages
#   scripts/etcd-cluster.sh start DIR PORT   start members on client ports PORT, PORT+1, PORT+2
#                                            (peer ports PORT+10..12), data and logs in DIR;
#                                            prints the client URLs, one per line, once healthy
#   scripts/etcd-cluster.sh stop DIR         kill the members started in DIR
#
# etcd's own defaults are kept (100 ms heartbeat, 1000 ms election, fsync on
# every commit): the configuration users would run.
set -euo pipefail

install() {
    if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
        return 0
    fi
    echo "installing etcd (etcd-server, etcd-client)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq etcd-server etcd-client >&2
    command -v etcd >/dev/null || { echo "etcd did not install" >&2; exit 1; }
}

start() {
    local dir=$1 port=$2
    install
    mkdir -p "$dir"
    local cluster=""
    for i in 0 1 2; do
        cluster+="e$i=http://127.0.0.1:$((port + 10 + i)),"
    done
    cluster=${cluster%,}
    for i in 0 1 2; do
        rm -rf "$dir/e$i.data"
        etcd --name "e$i" --data-dir "$dir/e$i.data" \
            --listen-client-urls "http://127.0.0.1:$((port + i))" \
            --advertise-client-urls "http://127.0.0.1:$((port + i))" \
            --listen-peer-urls "http://127.0.0.1:$((port + 10 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((port + 10 + i))" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "ramcoord-bench-$port" \
            >"$dir/e$i.log" 2>&1 &
        echo $! >"$dir/e$i.pid"
    done
    local endpoints="http://127.0.0.1:$port,http://127.0.0.1:$((port + 1)),http://127.0.0.1:$((port + 2))"
    for _ in $(seq 1 100); do
        if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then
            tr ',' '\n' <<<"$endpoints"
            return 0
        fi
        sleep 0.1
    done
    echo "etcd did not become healthy (logs in $dir)" >&2
    stop "$dir"
    exit 1
}

stop() {
    local dir=$1
    for f in "$dir"/e*.pid; do
        [ -e "$f" ] || continue
        kill -9 "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
}

case "${1:-}" in
install) install ;;
start) start "$2" "$3" ;;
stop) stop "$2" ;;
*)
    echo "usage: $0 install | start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
