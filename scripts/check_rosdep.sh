#!/usr/bin/env bash
# Check that every dependency key in the package.xml files resolves in the Jazzy rosdep database for
# Ubuntu 24.04 (what `rosdep install --from-paths src --ignore-src` on a workstation needs).
#
#   scripts/check_rosdep.sh                  # the machine's rosdep database (after `rosdep update`)
#   scripts/check_rosdep.sh ROSDISTRO_DIR    # offline: a checkout of the ros/rosdistro repository
#
# ROSDEP=path/to/rosdep picks the rosdep executable (default: the one on PATH; `pip install rosdep`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rosdep=${ROSDEP:-rosdep}
distro=jazzy os=ubuntu:noble

if [ $# -ge 1 ]; then
  # A private rosdep set-up whose sources are the checkout's files: nothing is fetched.
  db=$(cd "$1" && pwd)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/sources.list.d"
  for f in base python ruby; do echo "yaml file://$db/rosdep/$f.yaml" >> "$tmp/sources.list.d/20-default.list"; done
  export ROSDEP_SOURCE_PATH=$tmp/sources.list.d ROS_HOME=$tmp/home ROSDISTRO_INDEX_URL=file://$db/index-v4.yaml
  "$rosdep" update --rosdistro "$distro" > "$tmp/update.log" 2>&1 || { cat "$tmp/update.log"; exit 1; }
fi

keys=$("$rosdep" keys --from-paths "$root/threedmoe_msgs" "$root/threedmoe_ros" --ignore-src --rosdistro "$distro" | sort -u)
failed=0
for key in $keys; do
  if resolved=$("$rosdep" resolve "$key" --os "$os" --rosdistro "$distro" 2>&1); then
    printf '%-28s %s\n' "$key" "$(echo "$resolved" | grep -v '^#' | tr '\n' ' ')"
  else
    printf '%-28s UNRESOLVED: %s\n' "$key" "$(echo "$resolved" | tail -1)"
    failed=1
  fi
done
[ "$failed" = 0 ] && echo "rosdep: every key resolves for $distro on $os" || { echo "rosdep: unresolved keys above" >&2; exit 1; }
