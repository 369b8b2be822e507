"""The one training loop (train/loop.py): resuming continues the very curve an uninterrupted run
draws, data-parallel processes end with identical weights, and the schedule and data order are
what the docs say."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.models.pose_dit import PoseDiTConfig
from threedmoe_ros.policy import Policy, PolicyConfig
from threedmoe_ros.train import pose_dit
from threedmoe_ros.train.loop import EpochBatches, lr_factor

from ddp_stages import TOP, with_alignment


def _curve(run: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader((run / "metrics.csv").open())}


def _pose_dit_run(out: Path, **kwargs) -> Policy:
    cfg = pose_dit.TrainConfig(out=str(out), synthetic=24, max_steps=8, batch_size=4, warmup_steps=2, log_every=1,
                               save_every=100, ema_decay=0.9, device="cpu")
    head = PoseDiTConfig(hidden_size=32, depth=1, horizon=4, output="pointer")
    return pose_dit.train(cfg, PolicyConfig(head=head), SyntheticPickPlace(24, seed=0), progress=False, **kwargs)


def test_pose_dit_resume_continues_the_uninterrupted_curve(tmp_path):
    whole = _pose_dit_run(tmp_path / "whole")
    _pose_dit_run(tmp_path / "split", stop_after=3)  # ends at step 3 with a checkpoint, as a time limit would
    assert list(_curve(tmp_path / "split")) == [1, 2, 3]
    resumed = _pose_dit_run(tmp_path / "split", resume=True)
    assert _curve(tmp_path / "split") == pytest.approx(_curve(tmp_path / "whole"), rel=1e-6, abs=1e-7)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name  # the EMA weights the checkpoints hold
    loaded = Policy.from_pretrained(tmp_path / "split" / "checkpoint")
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole.state_dict().values(), loaded.state_dict().values()))


def test_a_trained_3dmoe_top_resumes_on_the_uninterrupted_curve(tmp_path):
    """The lm policy with its top upcycled to experts and LoRA-tuned (cached lower states, balance loss): the
    resumed run draws the same curve, and its state holds what trains, never the frozen LM."""

    def run(out: str, **kwargs) -> Policy:
        cfg = pose_dit.TrainConfig(out=str(tmp_path / out), synthetic=16, max_steps=6, batch_size=4, lr=1e-2,
                                   warmup_steps=1, log_every=1, save_every=100, ema_decay=0.0, device="cpu", **TOP)
        head = PoseDiTConfig(hidden_size=32, depth=1, horizon=4, output="pointer")
        data = with_alignment(SyntheticPickPlace(16, seed=0))
        return pose_dit.train(cfg, PolicyConfig(head=head), data, progress=False, **kwargs)

    whole = run("whole")
    run("split", stop_after=2)
    resumed = run("split", resume=True)
    assert list(_curve(tmp_path / "split")) == list(range(1, 7))
    assert _curve(tmp_path / "split") == pytest.approx(_curve(tmp_path / "whole"), rel=1e-5)
    assert "aux_loss" in (tmp_path / "split/metrics.csv").read_text().splitlines()[0]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    # The state holds what trains (LoRA, routers, the head), never the frozen LM's weights.
    state = torch.load(tmp_path / "split/train_state/state.pt", weights_only=False)
    assert state["step"] == 6 and any("lora_" in k for k in state["trainable"])
    assert any("router" in k for k in state["trainable"])
    assert not any("base_layer" in k or "embed_tokens" in k for k in {**state["trainable"], **state["buffers"]})


def test_resume_without_a_state_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_state"):
        _pose_dit_run(tmp_path / "never", resume=True)


def test_resume_from_a_torn_state_names_the_file(tmp_path):
    from threedmoe_ros.models.checkpoint import CheckpointError

    state = tmp_path / "torn" / "train_state" / "state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CheckpointError, match="state.pt is corrupt"):
        _pose_dit_run(tmp_path / "torn", resume=True)


@pytest.mark.slow
def test_two_accelerate_processes_end_with_identical_weights(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` with device cpu (torchrun + gloo on loopback; accelerate's
    own `--cpu` starts one process unless MPI is set up) trains Pose-DiT on the light encoder and on the lm
    encoder with a trained 3D-MoE top; both processes end with the same weights, and the weights moved."""
    with socket.socket() as s:  # a free loopback port for the process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(port), str(Path(__file__).with_name("ddp_stages.py")), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"digest_{r}.json").read_text()) for r in (0, 1))
    assert rank0["processes"] == 2 and rank0 == rank1
    # Each optimiser step saw 2 processes × batch_size samples: 3 steps of 8 plans.
    for run in ("pd", "top"):
        rows = list(csv.DictReader((tmp_path / run / "metrics.csv").open()))
        assert [int(r["step"]) for r in rows] == [1, 2, 3]
    fresh = Policy(Policy.from_pretrained(tmp_path / "pd/checkpoint").config)
    trained = Policy.from_pretrained(tmp_path / "pd/checkpoint")
    assert not all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))
    top = Policy.from_pretrained(tmp_path / "top/checkpoint").state_dict()
    assert any("router" in k and v.abs().sum() > 0 for k, v in top.items())


def test_schedule_warms_up_then_decays_to_the_floor():
    f = [lr_factor(s, total=100, warmup=10, min_ratio=0.1) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[100] == pytest.approx(0.1)


def test_epoch_batches_shard_one_permutation_and_resume_mid_epoch():
    ranks = [list(iter_n(EpochBatches(20, 3, seed=1, rank=r, world=2), 6)) for r in (0, 1)]
    epoch0 = [i for b in ranks[0][:3] + ranks[1][:3] for i in b]
    assert len(epoch0) == len(set(epoch0)) == 18  # 3 global batches of 6, no sample twice, 2 dropped
    assert ranks[0][3] != ranks[0][0]  # the next epoch is another permutation
    resumed = list(iter_n(EpochBatches(20, 3, seed=1, rank=0, world=2, start=2), 4))
    assert resumed == ranks[0][2:6]


def iter_n(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]
