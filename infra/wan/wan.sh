#!/usr/bin/env bash
# fedmq's WAN emulator (docs/wan.md): two network namespaces joined by a delay stage.
#
#   <prefix>-a (10.213.0.1, dev wan0)  <-- wanemu: hold each packet RTT/2 -->  <prefix>-b (10.213.0.2)
#
# loss: iptables statistic-match drops on each namespace's ingress (raw PREROUTING, so the
#       sender's TCP does not learn of it, as on a real path), applied in both directions;
# delay: wanemu (wanemu.c, compiled here with gcc), a forwarder between the two TUN devices;
# bandwidth: tbf on each TUN device's egress.
# Nothing outside the two namespaces is touched (no route, rule or qdisc in the caller's one).
#
#   wan.sh up   [--prefix P] [--rtt-ms MS] [--loss-pct PCT] [--rate-mbit MBIT]
#   wan.sh set  [--prefix P] [--rtt-ms MS] [--loss-pct PCT] [--rate-mbit MBIT]   (live change)
#   wan.sh down [--prefix P]
#   wan.sh status [--prefix P]
set -euo pipefail

cmd=${1:-}
shift || true
prefix=fedwan rtt_ms=0 loss_pct=0 rate_mbit=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --rtt-ms) rtt_ms=$2; shift 2 ;;
    --loss-pct) loss_pct=$2; shift 2 ;;
    --rate-mbit) rate_mbit=$2; shift 2 ;;
    *) echo "wan.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $prefix =~ ^[a-z][a-z0-9]{0,9}$ ]] || { echo "wan.sh: prefix must be [a-z][a-z0-9]{0,9}" >&2; exit 2; }
[[ $rtt_ms =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "wan.sh: --rtt-ms must be a number" >&2; exit 2; }
[[ $loss_pct =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "wan.sh: --loss-pct must be a number" >&2; exit 2; }
[[ $rate_mbit =~ ^[0-9]+$ && $rate_mbit -gt 0 ]] || { echo "wan.sh: --rate-mbit must be a positive integer" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
ns_a=$prefix-a ns_b=$prefix-b dev=wan0
state=/run/fedmq-wan/$prefix
addr_a=10.213.0.1 addr_b=10.213.0.2

in_a() { ip netns exec "$ns_a" "$@"; }
in_b() { ip netns exec "$ns_b" "$@"; }

stop_stage() {
  if [ -f "$state/wanemu.pid" ]; then
    local pid
    pid=$(cat "$state/wanemu.pid")
    kill "$pid" 2>/dev/null || true
    # the TUN devices stay attached until it has exited
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    rm -f "$state/wanemu.pid"
  fi
}

start_stage() {
  local one_way_us
  one_way_us=$(awk -v r="$rtt_ms" 'BEGIN { printf "%d", r * 500 }')
  # detached from the caller's stdout/stderr (a caller capturing them would wait for it)
  "$state/wanemu" "$ns_a" "$ns_b" "$dev" "$one_way_us" </dev/null >/dev/null 2>>"$state/wanemu.log" &
  echo $! >"$state/wanemu.pid"
  sleep 0.2
  kill -0 "$(cat "$state/wanemu.pid")" 2>/dev/null || { echo "wan.sh: wanemu failed: $(tail -1 "$state/wanemu.log")" >&2; exit 1; }
}

configure() {
  local p
  p=$(awk -v l="$loss_pct" 'BEGIN { printf "%.6f", l / 100 }')
  # bottleneck queue: 100 ms at the rate (at least 1.5 MB), like a WAN router's buffer
  local limit burst
  limit=$(( rate_mbit * 1000000 / 8 / 10 ))
  [ "$limit" -lt 1500000 ] && limit=1500000
  burst=$(( rate_mbit * 1000000 / 8 / 250 ))
  [ "$burst" -lt 32000 ] && burst=32000
  for ns in "$ns_a" "$ns_b"; do
    ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "${rate_mbit}mbit" \
      burst "$burst" limit "$limit"
    ip netns exec "$ns" iptables -t raw -F PREROUTING
    if [ "$p" != "0.000000" ]; then
      ip netns exec "$ns" iptables -t raw -A PREROUTING -i "$dev" \
        -m statistic --mode random --probability "$p" -j DROP
    fi
  done
  stop_stage
  start_stage
  echo "rtt_ms=$rtt_ms loss_pct=$loss_pct rate_mbit=$rate_mbit" >"$state/params"
}

case "$cmd" in
  up)
    if ip netns list | grep -qw "$ns_a"; then
      echo "wan.sh: $ns_a exists already (wan.sh down --prefix $prefix first)" >&2; exit 1
    fi
    mkdir -p "$state"
    gcc -O2 -Wall -o "$state/wanemu" "$here/wanemu.c"
    ip netns add "$ns_a"
    ip netns add "$ns_b"
    for side in a b; do
      ns=$prefix-$side
      [ $side = a ] && addr=$addr_a || addr=$addr_b
      ip netns exec "$ns" ip link set lo up
      ip netns exec "$ns" ip tuntap add dev "$dev" mode tun
      ip netns exec "$ns" ip link set "$dev" mtu 1500 txqueuelen 10000 up
      ip netns exec "$ns" ip addr add "$addr/24" dev "$dev"
      # larger socket buffers may be asked for (BDP at 1 Gbit/s x 320 ms = 40 MB)
      ip netns exec "$ns" sysctl -qw net.ipv4.tcp_rmem="4096 131072 67108864" \
        net.ipv4.tcp_wmem="4096 16384 67108864" \
        net.ipv4.tcp_no_metrics_save=1
    done
    configure
    echo "wan.sh: up: $ns_a $addr_a <-> $ns_b $addr_b ($(cat "$state/params"))"
    ;;
  set)
    [ -d "$state" ] || { echo "wan.sh: $prefix is not up" >&2; exit 1; }
    configure
    echo "wan.sh: set: $(cat "$state/params")"
    ;;
  down)
    stop_stage
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -rf "$state"
    echo "wan.sh: down: $prefix"
    ;;
  status)
    if [ -f "$state/params" ]; then cat "$state/params"; else echo "down"; exit 1; fi
    ;;
  *)
    sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
