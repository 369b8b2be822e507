"""`threedmoe-selfcheck`: is this environment able to run threedmoe_ros?

Imports every stack the package uses and sends a PickPlacePlan from one node to another over DDS
on loopback. Exits non-zero naming what is missing; the set-up runs it last.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

MODULES = [
    "numpy", "torch", "transformers", "peft", "accelerate", "safetensors", "gguf",
    "threedmoe_ros.sim",  # pybullet, imported without its build-time line
    "open3d", "rosbags", "transforms3d", "yaml", "tqdm", "matplotlib",
    "rclpy", "sensor_msgs.msg", "geometry_msgs.msg", "visualization_msgs.msg", "rosgraph_msgs.msg",
    "tf2_msgs.msg", "threedmoe_msgs.msg", "threedmoe_msgs.action",
]


def check_imports() -> list[str]:
    failed = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - report every failure, whatever its type
            failed.append(f"{name}: {exc}")
    return failed


def check_round_trip(timeout_s: float = 10.0) -> str | None:
    """Publish a PickPlacePlan and receive it in a second node; None on success, else why not."""
    from threedmoe_ros.rosenv import apply_localhost_env

    apply_localhost_env()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from threedmoe_msgs.msg import PickPlace, PickPlacePlan

    rclpy.init()
    executor = None
    try:
        talker, listener = rclpy.create_node("selfcheck_talker"), rclpy.create_node("selfcheck_listener")
        got: list[PickPlacePlan] = []
        listener.create_subscription(PickPlacePlan, "selfcheck_plan", got.append, 10)
        pub = talker.create_publisher(PickPlacePlan, "selfcheck_plan", 10)
        executor = SingleThreadedExecutor()
        executor.add_node(talker)
        executor.add_node(listener)
        msg = PickPlacePlan(instruction="put the red block in the green zone", steps=[PickPlace()])
        msg.steps[0].pick.position.x = 0.5
        deadline = time.monotonic() + timeout_s
        while not got and time.monotonic() < deadline:
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
        if not got:
            return f"no PickPlacePlan came back within {timeout_s:.0f} s over DDS on loopback"
        if got[0].instruction != msg.instruction or got[0].steps[0].pick.position.x != 0.5:
            return "the PickPlacePlan came back changed"
        return None
    finally:
        # The executor goes before the context: left to the garbage collector after shutdown, its
        # destructor raised "cannot use Destroyable" on the way out.
        if executor is not None:
            executor.shutdown()
        rclpy.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threedmoe-selfcheck", description="Check that this environment can run "
                                     "threedmoe_ros: import every stack it uses, send a PickPlacePlan between two "
                                     "nodes over DDS on loopback.",
                                     epilog="Runs with no options; exit status 0 when everything works.")
    parser.parse_args(argv)
    failed = check_imports()
    if failed:
        print("selfcheck: cannot import:\n  " + "\n  ".join(failed), file=sys.stderr)
        print("run `make setup` (scripts/setup.sh) to install what is missing", file=sys.stderr)
        return 1
    problem = check_round_trip()
    if problem:
        print(f"selfcheck: {problem}", file=sys.stderr)
        return 1
    print("selfcheck: imports ok; PickPlacePlan round trip over DDS (loopback) ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
