#!/usr/bin/env bash
# Proves the tests keep DDS on loopback: captures UDP and TCP on every non-loopback interface while
# the test suite runs, and fails if a single packet (DNS aside) appears there.
# Needs root and tcpdump (apt-get install tcpdump).
# Usage: scripts/check_loopback.sh [pytest args]      e.g. -m ros for only the tests that start DDS
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
pcap=$(mktemp --suffix=.pcap)
ifaces=$(ip -o link show up | awk -F': ' '$2 != "lo" {sub(/@.*/, "", $2); print $2}')
pids=()
for i in $ifaces; do
  tcpdump -i "$i" -n -U -w "$pcap.$i" '(udp or tcp) and not port 53' >/dev/null 2>&1 &
  pids+=($!)
done
sleep 1
status=0
.venv/bin/python -m pytest "$@" || status=$?
sleep 1
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
total=0
for i in $ifaces; do
  n=$(tcpdump -r "$pcap.$i" -n 2>/dev/null | wc -l)
  echo "interface $i: $n packet(s) during the tests"
  total=$((total + n))
done
rm -f "$pcap".*
[ "$status" = 0 ] || { echo "tests failed (exit $status)"; exit "$status"; }
[ "$total" = 0 ] || { echo "DDS traffic left loopback"; exit 1; }
echo "nothing left loopback during the tests"
