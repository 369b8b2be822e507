"""`threedmoe-bringup PROFILE`: run a profile's nodes as separate processes, without `ros2 launch`.

    threedmoe-bringup sim_eval                          # config/sim_eval.yaml
    threedmoe-bringup sim_eval -p policy.checkpoint=runs/pose_dit/checkpoint -p sim_bridge.episodes=10

Each node gets the profile's YAML as its --params-file (what launch/<profile>.launch.py passes),
plus the -p overrides and what they imply (profiles.resolve: the episodes the evaluator or recorder
waits for follow the sim bridge's). A YAML key or an override that the node does not declare is an
error. All nodes share one ROS_DOMAIN_ID: the user's when exported, else one derived from the pid,
with discovery on loopback unless ROS_AUTOMATIC_DISCOVERY_RANGE says otherwise. Their output is
forwarded with a [node] prefix. The run ends when the profile's main node exits (the evaluator for
sim_eval, the recorder for collect) or on Ctrl-C; the other nodes are then stopped with SIGINT, and
killed only if they do not stop in time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from threedmoe_ros.profiles import EXECUTABLES, MAIN_NODE, ProfileError, load_profile, profile_path, resolve
from threedmoe_ros.rosenv import localhost_env


def executable(name: str) -> str:
    """A node's console_script: in lib/threedmoe_ros of the colcon install the ament index names (where
    `ros2 run` looks), else next to this interpreter (venv, pip install), else on PATH."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_prefix

        candidates.append(Path(get_package_prefix("threedmoe_ros")) / "lib" / "threedmoe_ros" / name)
    except Exception:  # noqa: BLE001 - not a colcon install (or no ament index): the other places
        pass
    candidates.append(Path(sys.executable).parent / name)
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"executable '{name}' not found in {', '.join(str(c.parent) for c in candidates)} "
                                "or on PATH; run `make setup` (or `colcon build` and source install/setup.bash)")
    return found


def node_commands(profile: str, overrides: list[str]) -> dict[str, list[str]]:
    """{node: command line}: the profile's YAML as --params-file, then -p for every parameter that
    an override or profiles.resolve changes (values as JSON, which ROS reads as YAML)."""
    params_file = str(profile_path(profile))
    written, resolved = load_profile(profile), resolve(profile, overrides)
    commands = {}
    for name, params in resolved.items():
        cmd = [executable(EXECUTABLES[name]), "--ros-args", "-r", f"__node:={name}", "--params-file", params_file]
        for key, value in params.items():
            if key not in written[name] or written[name][key] != value:
                cmd += ["-p", f"{key}:={json.dumps(value)}"]
        commands[name] = cmd
    return commands


def _forward(name: str, stream, sink) -> None:
    for line in iter(stream.readline, ""):
        sink.write(f"[{name}] {line}")
        sink.flush()


def run(profile: str, overrides: list[str], domain_id: int | None = None, timeout_s: float | None = None,
        stop_grace_s: float = 10.0) -> int:
    """Start the profile's nodes, wait for the main node (or Ctrl-C, or timeout_s), stop the rest; exit status."""
    commands = node_commands(profile, overrides)
    env = localhost_env()
    if domain_id is not None:  # an explicit --domain-id beats the environment
        env["ROS_DOMAIN_ID"] = str(domain_id)
    where = Path(next(iter(commands.values()))[0]).parent
    print(f"bringup {profile}: nodes {', '.join(commands)} from {where}; ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, "
          f"discovery range {env['ROS_AUTOMATIC_DISCOVERY_RANGE']}", flush=True)
    procs: dict[str, subprocess.Popen] = {}
    for name, cmd in commands.items():
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
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID of all nodes (default: $ROS_DOMAIN_ID, else one derived from the pid)")
    parser.add_argument("--timeout", type=float, default=None, help="stop everything after this many seconds")
    args = parser.parse_args(argv)
    try:
        return run(args.profile, args.param, args.domain_id, args.timeout)
    except (FileNotFoundError, ProfileError) as exc:
        print(f"threedmoe-bringup: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
