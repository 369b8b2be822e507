"""Data collection writes readable episode bags, and the dataset reads back what the oracle did."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from threedmoe_ros.data import bags
from threedmoe_ros.sim import seeds
from threedmoe_ros.train import collect
from threedmoe_ros.data.dataset import EpisodeDataset
from threedmoe_ros.sim.cameras import default_cameras
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv

TASK = "stack-blocks-by-size"


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    code = collect.main(["--tasks", TASK, "--episodes", "2", "--split", "val", "--out", str(out),
                         "--resolution", "64x48", "--workers", "2"])
    assert code == 0
    return out


def test_one_bag_per_episode_named_task_split_seed(demos):
    bags_found = sorted(p.relative_to(demos).as_posix() for p in demos.glob("*/*/*"))
    assert bags_found == [f"{TASK}/val/1000000", f"{TASK}/val/1000001"]
    topics = {topic for topic, _, _ in bags.read_messages(demos / TASK / "val" / "1000000")}
    assert topics == set(bags.TOPICS)


def test_dataset_yields_the_remaining_oracle_plan_for_each_observation(demos):
    ds = EpisodeDataset(demos, tasks=[TASK], splits=["val"])
    samples = list(ds)
    assert len(samples) == len(ds) > 0
    with TabletopEnv(EnvConfig(task=TASK, observe=False, cameras=default_cameras(64, 48))) as env:
        env.reset(1_000_000)
        expected = env.oracle_plan()
    first = [s for s in samples if s.episode.name == "1000000"]
    np.testing.assert_allclose(first[0].plan, expected, atol=1e-9)
    assert [len(s.plan) for s in first] == list(range(len(expected), -1, -1))  # last: nothing left
    for s in first:
        assert s.result.success and s.result.reason == "success" and s.result.seed == 1_000_000
        assert s.instruction == s.result.instruction and len(s.cloud) > 0 and s.cloud.label is not None
    np.testing.assert_array_equal(ds[len(first) - 1].plan, first[-1].plan)


def test_split_seed_ranges_never_overlap():
    ranges = {split: range(seeds.seed_for(split, 0), seeds.seed_for(split, seeds.SPLIT_SIZE - 1) + 1)
              for split in seeds.SPLIT_SEEDS}
    spans = sorted((r.start, r.stop) for r in ranges.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    with pytest.raises(ValueError):
        seeds.seed_for("train", seeds.SPLIT_SIZE)


def test_a_second_run_resumes_instead_of_rewriting(demos):
    bag = demos / TASK / "val" / "1000000" / "1000000.mcap"
    before = bag.stat().st_mtime_ns
    assert collect.main(["--tasks", TASK, "--episodes", "1", "--split", "val", "--out", str(demos)]) == 0
    assert bag.stat().st_mtime_ns == before


@pytest.mark.parametrize("args, message", [
    (["--tasks", "juggle", "--episodes", "1"], "unknown task or family 'juggle'"),
    (["--episodes", "0"], "--episodes must be >= 1"),
    (["--episodes", "1", "--workers", "0"], "--workers must be >= 1"),
    (["--episodes", "1", "--resolution", "big"], "--resolution must look like"),
])
def test_bad_arguments_exit_with_a_message_not_a_traceback(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "threedmoe_ros.train.collect", "--out", str(tmp_path), *args],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_missing_dataset_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="collect"):
        EpisodeDataset(tmp_path / "nothing")


def test_joint_states_are_a_30_hz_trajectory_of_the_named_arm_joints(demos):
    stamps, names = [], set()
    for _, ns, msg in bags.read_messages(demos / TASK / "val" / "1000000", ["/joint_states"]):
        stamps.append(ns)
        names.add(tuple(msg.name))
        assert len(msg.position) == 6 and np.all(np.isfinite(msg.position))
    assert names == {("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint",
                      "wrist_3_joint")}
    gaps = np.diff(stamps)
    assert np.all(gaps > 0) and np.median(gaps) == pytest.approx(1e9 / 30, rel=0.05)


def test_recovery_collection_lets_the_policy_act_and_labels_every_state_with_the_oracle(tmp_path):
    """DAgger: an untrained policy drives (its steps go wherever it points), yet every recorded
    observation carries the oracle's plan from that state, and the trainer can read the episodes
    whether or not the policy succeeded."""
    import torch

    from threedmoe_ros.models.pose_dit import PoseDiTConfig
    from threedmoe_ros.policy import Policy, PolicyConfig

    torch.manual_seed(0)
    policy = Policy(PolicyConfig(head=PoseDiTConfig(hidden_size=32, num_heads=2, depth=1, output="pointer")))
    with torch.no_grad():
        policy.head.final_layer.validity.bias.fill_(5.0)  # an untrained policy that always proposes a step
    ckpt = policy.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "recovery"
    assert collect.main(["--tasks", "put-block-in-zone", "--episodes", "2", "--out", str(out), "--resolution", "64x48",
                         "--policy", str(ckpt)]) == 0
    samples = list(EpisodeDataset(out, only_success=False))
    assert len(samples) >= 2
    with TabletopEnv(EnvConfig(task="put-block-in-zone", observe=False, cameras=default_cameras(64, 48))) as env:
        env.reset(0)
        np.testing.assert_allclose(samples[0].plan, env.oracle_plan(), atol=1e-9)  # the first state is the reset's
    # The untrained policy's moves left the scene in states the oracle never visits on its own: the
    # remaining plans do not simply shrink by one step per observation as a demonstration's do.
    episode = [s for s in samples if s.episode.name == "0000000"]
    lengths = [len(s.plan) for s in episode]
    assert lengths != list(range(lengths[0], lengths[0] - len(lengths), -1)) or not episode[-1].result.success
