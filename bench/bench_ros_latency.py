"""End to end over ROS: cloud published → plan received, across processes, and behaviour at 30 Hz.

    python bench/bench_ros_latency.py [--checkpoint DIR] [--plans 200] [--rate 30 --seconds 10]

Starts the policy node as its own process (loopback DDS, a domain of its own) once per variant of
the points QoS (sensor_data = best effort, as drivers publish; reliable), and in each:
  1. request/response: publishes a simulator-sized cloud with a unique stamp, waits for the plan that
     carries that stamp; p50/p99 over --plans plans;
  2. streaming at --rate Hz for --seconds: counts the clouds planned, checks each plan answers the
     newest cloud the node had (staleness in clouds), and that latency does not grow over the run
     (a queue growing would show as later plans being older).
Writes bench/results/ros_latency.json. Timings depend on the machine: compare variants in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def sim_cloud(stamp_ns: int):
    """A fused observation from the tabletop (3 cameras at 320×240), as the sim bridge publishes."""
    from threedmoe_ros.sim.env import EnvConfig, TabletopEnv

    with TabletopEnv(EnvConfig(task="put-block-in-zone")) as env:
        obs, _ = env.reset(2_000_000)
    cloud = obs["cloud"]
    cloud.stamp_ns = stamp_ns
    return cloud, obs["instruction"]


def run_variant(qos: str, checkpoint: str, args, cloud, instruction) -> dict:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from threedmoe_msgs.msg import PickPlacePlan
    from sensor_msgs.msg import PointCloud2

    from threedmoe_ros.nodes import conversions as conv
    from threedmoe_ros.nodes.common import LATCHED

    log = tempfile.NamedTemporaryFile("w", suffix=f"_{qos}.log", delete=False)
    node_proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "policy_node"), "--ros-args", "-p", f"checkpoint:={checkpoint}",
         "-p", f"points_qos:={qos}", "-p", "seed:=0"], stdout=log, stderr=subprocess.STDOUT)
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_io", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    reliability = ReliabilityPolicy.RELIABLE if qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
    pub = node.create_publisher(PointCloud2, "points", QoSProfile(depth=1, reliability=reliability))
    node.create_publisher(String, "instruction", LATCHED).publish(String(data=instruction))
    received: dict[int, float] = {}
    node.create_subscription(PickPlacePlan, "pick_place_plan",
                             lambda m: received.setdefault(conv.stamp_ns(m.header), time.perf_counter()), LATCHED)
    msg = conv.cloud_to_msg(cloud)

    def spin_until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            executor.spin_once(timeout_sec=0.001)
        return pred()

    try:
        if not spin_until(lambda: node.count_subscribers("points") > 0, 120):
            raise RuntimeError(f"policy node did not come up; see {log.name}")
        # Warm-up: first plans pay for lazy initialisation.
        stamp = 1
        for _ in range(5):
            msg.header.stamp = conv.time_msg(stamp)
            pub.publish(msg)
            spin_until(lambda: stamp in received, 30)
            stamp += 1
        lat, lost = [], 0
        from tqdm import tqdm

        for _ in tqdm(range(args.plans), desc=f"request/response ({qos})", leave=False):
            stamp += 1
            msg.header.stamp = conv.time_msg(stamp)
            t0 = time.perf_counter()
            pub.publish(msg)
            if spin_until(lambda: stamp in received, 5):
                lat.append((received[stamp] - t0) * 1e3)
            else:
                lost += 1
        # Streaming at a fixed rate: only the newest cloud should ever be planned.
        sent: dict[int, float] = {}
        stream_start = stamp + 1
        period = 1.0 / args.rate
        next_t = time.perf_counter()
        end_t = next_t + args.seconds
        while time.perf_counter() < end_t:
            now = time.perf_counter()
            if now >= next_t:
                stamp += 1
                msg.header.stamp = conv.time_msg(stamp)
                sent[stamp] = now
                pub.publish(msg)
                next_t += period
            executor.spin_once(timeout_sec=max(0.0, min(0.002, next_t - time.perf_counter())))
        spin_until(lambda: False, 1.0)
        planned = sorted(s for s in received if s >= stream_start)
        stream_lat = [(received[s] - sent[s]) * 1e3 for s in planned]
        # Staleness: how many newer clouds had been published when the node started this plan's cloud.
        # Planned stamps must increase (no old cloud planned after a newer one).
        monotonic = all(a < b for a, b in zip(planned, planned[1:]))
        half = len(stream_lat) // 2
        return {
            "points_qos": qos,
            "request_response": {
                "plans": len(lat), "lost": lost,
                "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                "mean_ms": float(np.mean(lat)),
            },
            "streaming": {
                "rate_hz": args.rate, "seconds": args.seconds, "clouds_sent": len(sent), "plans": len(planned),
                "fraction_planned": len(planned) / max(1, len(sent)),
                "planned_in_order": monotonic,
                "p50_ms": float(np.percentile(stream_lat, 50)) if stream_lat else None,
                "p99_ms": float(np.percentile(stream_lat, 99)) if stream_lat else None,
                "first_half_p50_ms": float(np.median(stream_lat[:half])) if half else None,
                "second_half_p50_ms": float(np.median(stream_lat[half:])) if half else None,
            },
        }
    finally:
        node.destroy_node()
        context.try_shutdown()
        node_proc.send_signal(2)
        try:
            node_proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node_proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="", help="policy checkpoint (default: the embedded default)")
    parser.add_argument("--plans", type=int, default=200)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "ros_latency.json")
    args = parser.parse_args(argv)

    from threedmoe_ros.checkpoints import DEFAULT_POLICY
    from threedmoe_ros.rosenv import apply_localhost_env

    apply_localhost_env()
    checkpoint = args.checkpoint or str(DEFAULT_POLICY)
    cloud, instruction = sim_cloud(1)
    variants = [run_variant(q, checkpoint, args, cloud, instruction) for q in ("sensor_data", "reliable")]
    record = {
        "bench": "ros_latency", "checkpoint": checkpoint, "cloud_points": len(cloud),
        "cloud_bytes": len(cloud) * 20, "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "variants": variants,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"cloud of {len(cloud)} points; checkpoint {checkpoint}")
    print(f"{'points QoS':12} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} | {'30 Hz: planned':>15} {'in order':>9} {'p50 1st/2nd half':>18}")
    for v in variants:
        r, s = v["request_response"], v["streaming"]
        print(f"{v['points_qos']:12} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['lost']:5d} | "
              f"{s['plans']:6d}/{s['clouds_sent']:<8d} {str(s['planned_in_order']):>9} "
              f"{s['first_half_p50_ms'] or 0:8.1f}/{s['second_half_p50_ms'] or 0:<8.1f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
