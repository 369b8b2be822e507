"""End to end over ROS: cloud published → plan received, across processes, at 30 Hz, stage by stage.

    python bench/bench_ros_latency.py [--checkpoint light] [--seconds 60] [--rate 30] [--plans 100]
        [--variants default large_data bounded_memory] [--points-qos reliable] [--out bench/results/ros_latency.json]

Runs each variant — `default` (Fast DDS as rmw_fastrtps sets it up), `large_data`
(config/fastdds_large_data.xml: shared memory with an 8 MB segment, UDP on loopback only) and
`bounded_memory` (config/fastdds_bounded_memory.xml: history memory allocated per sample and freed)
— in a process of its own with that profile exported, which starts the policy node as its own
process (loopback DDS, a domain of its own, same profile) and:
  1. request/response: publishes a simulator cloud (3 cameras at 320×240) with a unique stamp and
     waits for the plan that carries it; p50/p99 over --plans plans;
  2. a stream at --rate Hz for --seconds: the clouds planned, that each plan answers a newer cloud
     than the last (no queue), latency cloud published → plan received (p50/p99/max, first and
     second half), the node's RSS every second (start, end, max, slope), and where the time went:
     the node's own stage times (its `timings_path`: decode, transform, validate, wait, condition,
     head, check, publish), the transport in (publish → the node's callback) and the rest (the plan's
     way back and the executor), matched by stamp.
Writes the JSON (always: a variant that gets no plan records why) and a PNG beside it. Timings
depend on the machine and on what else runs on it: compare variants in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROFILES = {"default": None, "large_data": ROOT / "threedmoe_ros" / "config" / "fastdds_large_data.xml",
            "bounded_memory": ROOT / "threedmoe_ros" / "config" / "fastdds_bounded_memory.xml"}
TARGETS = {"p50_ms": 100.0, "p99_ms": 300.0}


def sim_cloud():
    """A fused observation from the tabletop, as the sim bridge publishes it."""
    from threedmoe_ros.sim.env import EnvConfig, TabletopEnv

    with TabletopEnv(EnvConfig(task="put-block-in-zone")) as env:
        obs, _ = env.reset(2_000_000)
    return obs["cloud"], obs["instruction"]


def fastdds_env(profile: Path | None) -> dict:
    """A variant's environment: ours, with the variant's Fast DDS XML profile (or none)."""
    keys = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE", "RMW_FASTRTPS_USE_QOS_FROM_XML")
    env = {k: v for k, v in os.environ.items() if k not in keys}  # `default` means no profile, whatever is exported
    if profile is not None:
        # Fast DDS 2.x reads FASTRTPS_…, 3.x FASTDDS_…; rmw_fastrtps takes memory policy from XML only with this flag.
        env.update(FASTRTPS_DEFAULT_PROFILES_FILE=str(profile), FASTDDS_DEFAULT_PROFILES_FILE=str(profile),
                   RMW_FASTRTPS_USE_QOS_FROM_XML="1")
    return env


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"n": len(a), "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()), "mean_ms": float(a.mean())}


def run_variant(variant: str, args, cloud, instruction) -> dict:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String
    from threedmoe_msgs.msg import PickPlacePlan
    from tqdm import tqdm

    from threedmoe_ros.nodes import conversions as conv
    from threedmoe_ros.nodes.common import LATCHED

    work = Path(tempfile.mkdtemp(prefix=f"ros_latency_{variant}_"))
    timings_path, log_path = work / "timings.json", work / "node.log"
    log = log_path.open("w")
    node_proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "policy_node"), "--ros-args", "-p", f"checkpoint:={args.checkpoint}",
         "-p", f"points_qos:={args.points_qos}", "-p", "seed:=0", "-p", f"timings_path:={timings_path}",
         "-p", f"torch_threads:={args.torch_threads}"],
        stdout=log, stderr=subprocess.STDOUT)  # this process's environment: the variant's profile
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_io", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    reliability = ReliabilityPolicy.RELIABLE if args.points_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
    pub = node.create_publisher(PointCloud2, "points", QoSProfile(depth=1, reliability=reliability))
    node.create_publisher(String, "instruction", LATCHED).publish(String(data=instruction))
    received: dict[int, float] = {}
    node.create_subscription(PickPlacePlan, "pick_place_plan",
                             lambda m: received.setdefault(conv.stamp_ns(m.header), time.perf_counter()), LATCHED)
    msg = conv.cloud_to_msg(cloud)
    sent: dict[int, float] = {}  # stamp → perf_counter at publish
    sent_wall: dict[int, int] = {}  # stamp → time.time_ns() at publish (the node's callback records the same clock)
    stamp = 0

    def spin_until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            executor.spin_once(timeout_sec=0.001)
        return pred()

    def publish() -> int:
        nonlocal stamp
        stamp += 1
        msg.header.stamp = conv.time_msg(stamp)
        sent_wall[stamp], sent[stamp] = time.time_ns(), time.perf_counter()
        pub.publish(msg)
        return stamp

    record: dict = {"variant": variant, "cloud_points": len(cloud), "cloud_bytes": len(msg.data),
                    "fastdds_profile": str(PROFILES[variant].relative_to(ROOT)) if PROFILES[variant] else None,
                    "node_log": str(log_path)}
    try:
        if not spin_until(lambda: node.count_subscribers("points") > 0, 180):
            raise RuntimeError(f"the policy node did not come up in 180 s; see {log_path}")
        # Warm-up: the first plans pay for lazy initialisation. Until the first plan comes back the cloud is
        # sent again every second: the graph may still list the previous variant's node, so the first
        # clouds can go out before this node's subscription has matched. A variant whose clouds never
        # arrive ends here.
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            s = publish()
            spin_until(lambda: s in received, 1.0)
        if not received:
            raise RuntimeError(f"no plan came back for a cloud within 60 s (points QoS {args.points_qos}); see {log_path}")
        for _ in range(5):
            s = publish()
            spin_until(lambda: s in received, 30)
        lat, lost = [], 0
        for _ in tqdm(range(args.plans), desc=f"request/response ({variant})", leave=False):
            s = publish()
            if spin_until(lambda: s in received, 5):
                lat.append((received[s] - sent[s]) * 1e3)
            else:
                lost += 1
                if lost >= 10:
                    raise RuntimeError(f"10 clouds got no plan within 5 s each; see {log_path}")
        record["request_response"] = {**percentiles(lat), "lost": lost}

        # The stream: clouds at a fixed rate; only the newest should ever be planned.
        stream_start = stamp + 1
        period = 1.0 / args.rate
        rss = [(0.0, rss_mb(node_proc.pid))]
        t_start = next_t = time.perf_counter()
        next_rss = t_start + 1.0
        bar = tqdm(total=int(args.seconds), desc=f"{args.rate:g} Hz stream ({variant})", unit="s", leave=False)
        while (now := time.perf_counter()) < t_start + args.seconds:
            if now >= next_t:
                publish()
                next_t += period
            if now >= next_rss:
                rss.append((now - t_start, rss_mb(node_proc.pid)))
                next_rss += 1.0
                bar.update(1)
            executor.spin_once(timeout_sec=max(0.0, min(0.002, next_t - time.perf_counter())))
        bar.close()
        spin_until(lambda: False, 1.0)
        planned = sorted(s for s in received if s >= stream_start)
        e2e = [(received[s] - sent[s]) * 1e3 for s in planned]
        half = len(e2e) // 2
        clouds_sent = stamp - stream_start + 1
        rss_values = [r for _, r in rss if r is not None]
        slope = float(np.polyfit([t for t, r in rss if r is not None], rss_values, 1)[0] * 60) if len(rss_values) > 2 else None
        record["stream"] = {
            "rate_hz": args.rate, "seconds": args.seconds, "clouds_sent": clouds_sent, "plans": len(planned),
            "fraction_planned": len(planned) / max(1, clouds_sent),
            "planned_in_order": all(a < b for a, b in zip(planned, planned[1:])),
            "latency": percentiles(e2e),
            "first_half_p50_ms": float(np.median(e2e[:half])) if half else None,
            "second_half_p50_ms": float(np.median(e2e[half:])) if half else None,
            "rss_mb": {"start": rss_values[0] if rss_values else None, "end": rss_values[-1] if rss_values else None,
                       "max": max(rss_values, default=None), "slope_mb_per_min": slope,
                       "series": [[round(t, 1), r] for t, r in rss]},
        }
        record["stream"]["meets_target"] = bool(e2e) and all(
            record["stream"]["latency"][k] <= v for k, v in TARGETS.items())
        record["_stream_planned"] = {s: (sent[s], sent_wall[s], received[s]) for s in planned}
    except RuntimeError as exc:
        record["error"] = str(exc)
        print(f"{variant}: {exc}", file=sys.stderr)
    finally:
        node.destroy_node()
        context.try_shutdown()
        node_proc.send_signal(signal.SIGINT)  # the node writes its timings on the way out
        try:
            node_proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        log.close()
    planned = record.pop("_stream_planned", {})
    if planned:
        record["stream"]["stages"] = stage_breakdown(timings_path, planned)
    return record


def stage_breakdown(timings_path: Path, planned: dict[int, tuple[float, int, float]]) -> dict:
    """p50/p99 of every stage over the stream's plans, matched by stamp with the client's own times.
    `transport_in`: publish → the node's points callback (same host, same wall clock); `rest`: what the
    end-to-end latency holds beyond transport_in and the node's stages (the plan's way back, executor
    scheduling between the node's callbacks)."""
    if not timings_path.is_file():
        return {"error": f"the node wrote no {timings_path.name}"}
    doc = json.loads(timings_path.read_text())
    stages, by_stamp = doc["stages"], {p["stamp_ns"]: p for p in doc["plans"]}
    columns: dict[str, list[float]] = {name: [] for name in ["transport_in", *stages, "rest", "end_to_end"]}
    for stamp, (sent, sent_wall, received) in planned.items():
        p = by_stamp.get(stamp)
        if p is None:
            continue
        e2e = (received - sent) * 1e3
        transport = (p["callback_wall_ns"] - sent_wall) / 1e6
        node_ms = sum(p[f"{s}_ms"] for s in stages)
        columns["transport_in"].append(transport)
        for s in stages:
            columns[s].append(p[f"{s}_ms"])
        columns["rest"].append(e2e - transport - node_ms)
        columns["end_to_end"].append(e2e)
    return {name: percentiles(values) for name, values in columns.items()}


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in record["variants"] if "stream" in v]
    if not variants:
        return
    fig, (ax_rss, ax_stage) = plt.subplots(1, 2, figsize=(12, 4.2))
    for v in variants:
        series = [(t, r) for t, r in v["stream"]["rss_mb"]["series"] if r is not None]
        ax_rss.plot(*zip(*series), label=f"{v['variant']} (p50 {v['stream']['latency']['p50_ms']:.0f} ms, "
                                         f"p99 {v['stream']['latency']['p99_ms']:.0f} ms)")
    ax_rss.set_xlabel("seconds into the stream")
    ax_rss.set_ylabel("policy node RSS (MB)")
    ax_rss.set_title(f"{variants[0]['stream']['rate_hz']:g} Hz stream: node memory")
    ax_rss.legend(fontsize=8)
    names = [n for n in variants[0]["stream"].get("stages", {}) if n != "end_to_end"]
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        stages = v["stream"].get("stages", {})
        ax_stage.bar(np.arange(len(names)) + i * width, [stages.get(n, {}).get("p50_ms", 0) for n in names], width,
                     label=f"{v['variant']} p50")
    ax_stage.set_xticks(np.arange(len(names)) + width * (len(variants) - 1) / 2, names, rotation=35, ha="right")
    ax_stage.set_ylabel("ms (p50 over the stream's plans)")
    ax_stage.set_title("where a plan's time goes")
    ax_stage.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def variant_in_child(variant: str, argv: list[str]) -> dict:
    """Run one variant in a child process whose environment holds the variant's Fast DDS profile:
    Fast DDS reads its XML once per process, and the client's own participant must use it too
    (the shared-memory segment belongs to the sender)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "variant.json"
        run = subprocess.run([sys.executable, __file__, *argv, "--one-variant", variant, "--variant-out", str(out)],
                             env=fastdds_env(PROFILES[variant]))
        if run.returncode != 0 or not out.is_file():
            return {"variant": variant, "error": f"the variant's client exited with status {run.returncode}"}
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="light", help="policy checkpoint directory or shipped name (default: light)")
    parser.add_argument("--plans", type=int, default=100, help="request/response plans")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--points-qos", choices=("reliable", "sensor_data"), default="reliable")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=list(PROFILES), default=list(PROFILES))
    parser.add_argument("--out", type=Path, default=RESULTS / "ros_latency.json")
    parser.add_argument("--one-variant", choices=list(PROFILES), help=argparse.SUPPRESS)  # a child: this variant only
    parser.add_argument("--variant-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plans < 1 or args.rate <= 0 or args.seconds < 3:
        parser.error("--plans must be >= 1, --rate > 0 and --seconds >= 3")

    from threedmoe_ros.checkpoints import policy_path
    from threedmoe_ros.rosenv import apply_localhost_env

    apply_localhost_env()
    args.checkpoint = policy_path(args.checkpoint)
    if args.one_variant:  # a child: the cloud is rendered where it is published
        args.variant_out.write_text(json.dumps(run_variant(args.one_variant, args, *sim_cloud())))
        return 0
    variants = [variant_in_child(v, argv or sys.argv[1:]) for v in args.variants]
    try:
        checkpoint = str(Path(args.checkpoint).resolve().relative_to(ROOT))
    except ValueError:
        checkpoint = args.checkpoint
    record = {
        "bench": "ros_latency", "checkpoint": checkpoint, "points_qos": args.points_qos, "torch_threads": args.torch_threads,
        "cloud_points": next((v["cloud_points"] for v in variants if "cloud_points" in v), None),
        "cloud_bytes": next((v["cloud_bytes"] for v in variants if "cloud_bytes" in v), None), "targets": TARGETS,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(), "variants": variants,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    plot(record, args.out.with_suffix(".png"))
    print(f"cloud of {record['cloud_points']} points; checkpoint {checkpoint}; points QoS {args.points_qos}")
    print(f"{'variant':15} {'req p50':>8} {'req p99':>8} | {'stream planned':>15} {'p50':>6} {'p99':>6} {'max':>6} "
          f"{'in order':>8} {'RSS start→end MB':>17} {'MB/min':>7}")
    for v in variants:
        if "error" in v:
            print(f"{v['variant']:15} no result: {v['error']}")
            continue
        r, s = v["request_response"], v["stream"]
        m = s["rss_mb"]
        print(f"{v['variant']:15} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} | {s['plans']:6d}/{s['clouds_sent']:<8d} "
              f"{s['latency'].get('p50_ms', 0):6.0f} {s['latency'].get('p99_ms', 0):6.0f} {s['latency'].get('max_ms', 0):6.0f} "
              f"{str(s['planned_in_order']):>8} {m['start']:8.0f}→{m['end']:<8.0f} {m['slope_mb_per_min'] or 0:7.2f}")
        for name, st in s.get("stages", {}).items():
            if isinstance(st, dict) and st.get("n"):
                print(f"    {name:13} p50 {st['p50_ms']:7.2f} ms   p99 {st['p99_ms']:7.2f} ms")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0 if all("error" not in v for v in variants) else 1


if __name__ == "__main__":
    sys.exit(main())
