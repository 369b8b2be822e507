"""The policy node under a hostile flood, with the `policy` profile's defaults (config/policy.yaml).

    python bench/bench_ros_robustness.py [--seconds 10] [--rate 30] [--floods 2]

Starts the policy node as its own process (loopback DDS, a domain of its own) with the profile's
parameters, then:
  1. streams a simulator cloud at --rate Hz for --seconds: cloud published → plan received, p50/p99,
     fraction of clouds planned (the node plans the newest and drops older ones by design);
  2. --floods times: back to back (each once the last was answered), malformed clouds (every PointField datatype with bad counts,
     offsets past point_step, truncated data, endianness lies, NaN/1e30, nothing to pick, 2 000 001
     points) and malformed instructions as raw CDR (NUL, invalid UTF-8, control characters, 10 MB),
     counting refusals on `status`; RSS of the node after each flood;
  3. streams again, to show the node plans as before.
Writes bench/results/ros_robustness.json. Timings depend on the machine (2 shared cores here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PROFILE = Path(__file__).resolve().parents[1] / "threedmoe_ros" / "config" / "policy.yaml"


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cdr(payload: bytes) -> bytes:
    return b"\x00\x01\x00\x00" + struct.pack("<I", len(payload) + 1) + payload + b"\x00"


def malformed_clouds(good):
    """Builders (stamp → PointCloud2) of clouds the node must refuse; `good(stamp)` makes a good one."""
    from sensor_msgs.msg import PointField

    def mutate(change):
        def build(stamp):
            m = good(stamp)
            change(m)
            return m

        return build

    def field(m, name):
        return next(f for f in m.fields if f.name == name)

    builders = []
    for datatype in range(0, 10):
        for count in (0, 2, 3, 4):
            builders.append(mutate(lambda m, d=datatype, c=count: (setattr(field(m, "label"), "datatype", d),
                                                                    setattr(field(m, "label"), "count", c))))
    for name, offset in (("x", 10_000), ("z", 2**31)):
        builders.append(mutate(lambda m, n=name, o=offset: setattr(field(m, n), "offset", o)))
    builders += [
        mutate(lambda m: setattr(m, "data", bytes(m.data)[:-1])),
        mutate(lambda m: setattr(m, "row_step", 0)),
        mutate(lambda m: setattr(m, "height", 3)),
        mutate(lambda m: setattr(m, "is_bigendian", True)),
        mutate(lambda m: setattr(m.header, "frame_id", "camera_link")),
        mutate(lambda m: setattr(m, "fields", [])),
    ]
    for value in (np.nan, np.inf, 1e30, 3.4e38):
        def coords(m, v=value):
            raw = np.frombuffer(bytes(m.data), np.uint8).reshape(m.width, m.point_step).copy()
            raw[:, :12] = np.full((m.width, 3), v, "<f4").view(np.uint8)
            m.data = raw.tobytes()

        builders.append(mutate(coords))

    def only_table(m):
        raw = np.frombuffer(bytes(m.data), np.uint8).reshape(m.width, m.point_step).copy()
        raw[:, 16:20] = 0  # every label 0: nothing to pick
        m.data = raw.tobytes()

    builders.append(mutate(only_table))

    def two_million(m):
        n = 2_000_001
        m.fields = [PointField(name=c, offset=4 * i, datatype=7, count=1) for i, c in enumerate("xyz")]
        m.point_step, m.width, m.row_step, m.data = 12, n, 12 * n, bytes(12 * n)

    builders.append(mutate(two_million))
    return builders


BAD_INSTRUCTIONS = [cdr(b""), cdr(b"put the red\x00 block"), cdr(b"put \xff\xfe"), cdr(b"put \x1b[31m"),
                    cdr(b"x" * 100_000), cdr(b"put " * 2_500_000), b"\x7f\x7f\x00\x00\x04\x00\x00\x00put\x00"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--floods", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "ros_robustness.json")
    args = parser.parse_args(argv)

    from threedmoe_ros.rosenv import apply_localhost_env

    apply_localhost_env()
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String
    from threedmoe_msgs.msg import InputStatus, PickPlacePlan

    from threedmoe_ros.nodes import conversions as conv
    from threedmoe_ros.nodes.common import LATCHED
    from threedmoe_ros.sim.env import EnvConfig, TabletopEnv

    with TabletopEnv(EnvConfig(task="put-block-in-zone")) as env:
        obs, _ = env.reset(2_000_000)
    cloud, instruction = obs["cloud"], obs["instruction"]

    log = tempfile.NamedTemporaryFile("w", suffix="_policy.log", delete=False)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "policy_node"), "--ros-args", "-r", "__node:=policy",
                             "--params-file", str(PROFILE)], stdout=log, stderr=subprocess.STDOUT)
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    # What the profile's node subscribes with by default: reliable, depth 1.
    points = node.create_publisher(PointCloud2, "points", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    text = node.create_publisher(String, "instruction", LATCHED)
    received: dict[int, float] = {}
    statuses: list = []
    node.create_subscription(PickPlacePlan, "pick_place_plan",
                             lambda m: received.setdefault(conv.stamp_ns(m.header), time.perf_counter()), LATCHED)
    node.create_subscription(InputStatus, "status", statuses.append, 100)

    def spin_until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            executor.spin_once(timeout_sec=0.002)
        return pred()

    stamp = [0]

    def good(s):
        msg = conv.cloud_to_msg(cloud)
        msg.header.stamp = conv.time_msg(s)
        return msg

    def stream() -> dict:
        sent: dict[int, float] = {}
        period, next_t = 1.0 / args.rate, time.perf_counter()
        end_t = next_t + args.seconds
        while time.perf_counter() < end_t:
            if time.perf_counter() >= next_t:
                stamp[0] += 1
                sent[stamp[0]] = time.perf_counter()
                points.publish(good(stamp[0]))
                next_t += period
            executor.spin_once(timeout_sec=max(0.0, min(0.002, next_t - time.perf_counter())))
        spin_until(lambda: False, 1.0)
        lat = [(received[s] - sent[s]) * 1e3 for s in sorted(sent) if s in received]
        return {"rate_hz": args.rate, "clouds_sent": len(sent), "plans": len(lat),
                "fraction_planned": len(lat) / max(1, len(sent)),
                "p50_ms": float(np.percentile(lat, 50)) if lat else None,
                "p99_ms": float(np.percentile(lat, 99)) if lat else None}

    try:
        if not spin_until(lambda: node.count_subscribers("points") > 0, 120):
            raise RuntimeError(f"policy node did not come up; see {log.name}")
        text.publish(String(data=instruction))
        for _ in range(5):  # warm-up
            stamp[0] += 1
            points.publish(good(stamp[0]))
            spin_until(lambda: stamp[0] in received, 30)
        record = {"bench": "ros_robustness", "profile": str(PROFILE.name), "cloud_points": len(cloud),
                  "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
        record["stream_before"] = stream()
        record["rss_mb"] = [rss_mb(proc.pid)]
        builders = malformed_clouds(good)
        floods = []
        for _ in range(args.floods):
            refused_before = sum(not s.ok for s in statuses)
            planned_before = len(received)
            t0 = time.perf_counter()
            # Back to back, each as soon as the last was answered (a depth-1 subscription would
            # otherwise keep only the newest of a burst, by design, and most would never be judged).
            for k, build in enumerate(builders):
                stamp[0] += 1
                points.publish(build(stamp[0]))
                spin_until(lambda: sum(not s.ok for s in statuses) - refused_before > k, 10)
            for k, raw in enumerate(BAD_INSTRUCTIONS):
                text.publish(raw)
                spin_until(lambda: sum(not s.ok for s in statuses) - refused_before > len(builders) + k, 10)
            expected = len(builders) + len(BAD_INSTRUCTIONS)
            text.publish(String(data=instruction))
            spin_until(lambda: False, 2.0)
            floods.append({"inputs": expected, "refused": sum(not s.ok for s in statuses) - refused_before,
                           "plans_for_them": len(received) - planned_before, "seconds": time.perf_counter() - t0,
                           "alive": proc.poll() is None})
            record["rss_mb"].append(rss_mb(proc.pid))
        record["floods"] = floods
        record["stream_after"] = stream()
        record["alive"] = proc.poll() is None
    finally:
        node.destroy_node()
        context.try_shutdown()
        proc.send_signal(2)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    b, a = record["stream_before"], record["stream_after"]
    print(f"{args.rate:.0f} Hz with {PROFILE.name} defaults: p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms, "
          f"{b['plans']}/{b['clouds_sent']} planned; after the floods p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms")
    for i, f in enumerate(record["floods"]):
        print(f"flood {i + 1}: {f['refused']}/{f['inputs']} refused, {f['plans_for_them']} plans, alive {f['alive']}")
    print(f"node RSS MB: {' → '.join(f'{r:.0f}' for r in record['rss_mb'])}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
