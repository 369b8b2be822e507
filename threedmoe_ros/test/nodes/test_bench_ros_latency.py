"""bench/bench_ros_latency.py ends with its JSON and plot, every variant with a stream and a stage breakdown
(the benchmark once ran forever on a lost best-effort cloud and never wrote anything)."""

import json
import subprocess
import sys
from pathlib import Path

from threedmoe_ros.nodes.timings import STAGES

REPO = Path(__file__).resolve().parents[3]


def test_ros_latency_bench_writes_every_variant_with_its_stages(tmp_path, ros_env):
    out = tmp_path / "ros_latency.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_ros_latency.py"), "--seconds", "3", "--rate", "10", "--plans", "3",
         "--variants", "large_data", "bounded_memory", "--out", str(out)],
        env=ros_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads(out.read_text())
    assert [v["variant"] for v in record["variants"]] == ["large_data", "bounded_memory"]
    for variant in record["variants"]:
        assert "error" not in variant, variant
        stream = variant["stream"]
        assert stream["plans"] > 0 and stream["planned_in_order"]
        assert stream["rss_mb"]["start"] > 0 and len(stream["rss_mb"]["series"]) >= 3
        stages = stream["stages"]
        # Every node stage, the transport in and the rest, over the plans the client matched by stamp.
        assert set(stages) == {"transport_in", *STAGES, "rest", "end_to_end"}, stages
        assert all(stages[name]["n"] == stream["plans"] for name in stages), stages
        assert stages["head"]["p50_ms"] > 0 and stages["end_to_end"]["p50_ms"] >= stages["head"]["p50_ms"]
    assert out.with_suffix(".png").stat().st_size > 0
