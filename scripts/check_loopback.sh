#!/usr/bin/env bash
# Proves the ROS tests keep DDS on loopback: captures UDP on every non-loopback interface while
# running them, and fails if a single RTPS/DDS packet (or any UDP but DNS) appears there.
# Needs root and tcpdump (apt-get install tcpdump).   Usage: scripts/check_loopback.sh [pytest args]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
pcap=$(mktemp --suffix=.pcap)
ifaces=$(ip -o link show up | awk -F': ' '$2 != "lo" {sub(/@.*/, "", $2); print $2}')
pids=()
for i in $ifaces; do
  tcpdump -i "$i" -n -U -w "$pcap.$i" 'udp and not port 53' >/dev/null 2>&1 &
  pids+=($!)
done
sleep 1
status=0
.venv/bin/python -m pytest -m ros "$@" || status=$?
sleep 1
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
total=0
for i in $ifaces; do
  n=$(tcpdump -r "$pcap.$i" -n 2>/dev/null | wc -l)
  echo "interface $i: $n UDP packet(s) during the ROS tests"
  total=$((total + n))
done
rm -f "$pcap".*
[ "$status" = 0 ] || { echo "ROS tests failed (exit $status)"; exit "$status"; }
[ "$total" = 0 ] || { echo "DDS traffic left loopback"; exit 1; }
echo "no UDP left loopback during the ROS tests"
