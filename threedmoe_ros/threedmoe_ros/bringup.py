"""`threedmoe-bringup PROFILE`: run a profile's nodes as separate processes, without `ros2 launch`.

    threedmoe-bringup sim_eval                          # config/sim_eval.yaml
    threedmoe-bringup sim_eval -p policy.checkpoint=runs/pose_dit/checkpoint -p sim_bridge.episodes=10

Each node gets the profile's YAML as its --params-file (what launch/<profile>.launch.py passes) plus
any -p overrides; all share one loopback-only ROS_DOMAIN_ID. Their output is forwarded with a
[node] prefix. The run ends when the profile's main node exits (the evaluator for sim_eval, the
recorder for collect) or on Ctrl-C; the other nodes are then stopped with SIGINT, and killed only
if they do not stop in time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from threedmoe_ros.profiles import EXECUTABLES, MAIN_NODE, load_profile, profile_path
from threedmoe_ros.rosenv import localhost_env, pick_domain_id


def executable(name: str) -> str:
    """The console_script, next to this interpreter (venv) or on PATH (colcon install)."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"executable '{name}' not found next to {sys.executable} or on PATH; run `make setup`")
    return found


def parse_overrides(items: list[str], nodes: dict) -> dict[str, list[str]]:
    """['node.param=value', ...] → {node: ['param:=value', ...]}; errors name the bad item."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise ValueError(f"override '{item}' must look like node.param=value")
        if node not in nodes:
            raise ValueError(f"override '{item}': node '{node}' is not in this profile ({', '.join(nodes)})")
        out.setdefault(node, []).append(f"{param}:={value}")  # ROS parses the value as YAML
    return out


def _forward(name: str, stream, sink) -> None:
    for line in iter(stream.readline, ""):
        sink.write(f"[{name}] {line}")
        sink.flush()


def run(profile: str, overrides: list[str], domain_id: int | None = None, timeout_s: float | None = None,
        stop_grace_s: float = 10.0) -> int:
    nodes = load_profile(profile)
    params = str(profile_path(profile))
    extra = parse_overrides(overrides, nodes)
    env = localhost_env(domain_id if domain_id is not None else pick_domain_id())
    print(f"bringup {profile}: nodes {', '.join(nodes)}; ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} (loopback only)", flush=True)
    procs: dict[str, subprocess.Popen] = {}
    for name in nodes:
        cmd = [executable(EXECUTABLES[name]), "--ros-args", "-r", f"__node:={name}", "--params-file", params]
        for p in extra.get(name, []):
            cmd += ["-p", p]
        procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
        threading.Thread(target=_forward, args=(name, procs[name].stdout, sys.stdout), daemon=True).start()

    main = MAIN_NODE.get(Path(profile).stem)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    status = 0
    try:
        while True:
            if main is not None and procs[main].poll() is not None:
                break
            crashed = [n for n, p in procs.items() if p.poll() not in (None, 0)]
            if crashed:
                print(f"bringup: {', '.join(crashed)} exited with an error; stopping", file=sys.stderr, flush=True)
                status = 1
                break
            if main is None and all(p.poll() is not None for p in procs.values()):
                break
            if deadline is not None and time.monotonic() > deadline:
                print(f"bringup: timed out after {timeout_s:.0f} s; stopping", file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("bringup: interrupted; stopping nodes", file=sys.stderr, flush=True)
        status = 130
    finally:
        stop(procs, stop_grace_s)
    if main is not None and status == 0:
        status = procs[main].returncode or 0
    return status


def stop(procs: dict[str, subprocess.Popen], grace_s: float) -> None:
    """SIGINT (what Ctrl-C sends: nodes close bags and write tables), then SIGKILL after grace_s."""
    for p in procs.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for name, p in procs.items():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"bringup: {name} did not stop in {grace_s:.0f} s; killing it", file=sys.stderr, flush=True)
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threedmoe-bringup", description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="profile name (config/<profile>.yaml) or a YAML path")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="override a node parameter (repeatable)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: derived from the pid)")
    parser.add_argument("--timeout", type=float, default=None, help="stop everything after this many seconds")
    args = parser.parse_args(argv)
    try:
        return run(args.profile, args.param, args.domain_id, args.timeout)
    except (FileNotFoundError, ValueError) as exc:
        print(f"threedmoe-bringup: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
