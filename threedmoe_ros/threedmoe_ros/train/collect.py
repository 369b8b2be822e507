"""Collect oracle demonstrations from the simulator as rosbag2 (mcap) episodes.

    threedmoe-collect --tasks put-block-in-zone stack-blocks --episodes 100 \\
        --split train --out data_out/demos --workers 2

One bag directory per episode, OUT/<task>/<split>/<seed>, with topics
    /instruction      std_msgs/String, at reset
    /points           sensor_msgs/PointCloud2 (x y z rgb label), one per observation
    /pick_place_plan  the oracle's remaining plan from that observation (header.stamp = the cloud's stamp;
                      an empty plan after the last step: nothing is left to do)
    /joint_states     the arm at 30 Hz of simulated time
    /episode_result   threedmoe_msgs/EpisodeResult, at the end
Stamps are simulated time. The oracle runs closed loop: it executes one step, observes, re-plans.

Tasks held out from training (sim.tasks.HELDOUT_TASKS, `--tasks heldout-tasks` in the evaluator)
are never collected: `all` and family names mean their training tasks here, and naming a held-out
task is an error.

Seeds: episode i of a split uses sim.seeds.seed_for(split, i), so splits never share a scene.
Colours come from the training split unless --unseen-colors (CLIPort's held-out colours, for
the unseen-colour test set: `--split test --unseen-colors --out DIR_UNSEEN`). `--appearance train
--phrasing train` randomizes the scene's look and the instruction's words within the training
ranges (sim/appearance.py, sim/phrasing.py); the shifted and heldout splits are for evaluation.
Existing complete bags are kept, so an interrupted collection resumes where it stopped.

Recovery data (DAgger): `--policy CKPT` lets a trained policy act — its first planned step runs
whenever the simulator accepts it, the oracle's otherwise — while every observation is still
labelled with the oracle's plan from that state. A dropped or misplaced block then has a
demonstration. A failed primitive does not end such an episode (the next state is the point), and
the bags are read with `threedmoe-train-pose-dit --recovery-data DIR`, successful or not.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from threedmoe_ros.sim.seeds import SPLIT_SEEDS, SPLIT_SIZE, seed_for


def episode_dir(out: Path, task: str, split: str, seed: int) -> Path:
    return Path(out) / task / split / f"{seed:07d}"


@dataclass
class Job:
    task: str
    split: str
    seed: int
    out: Path
    unseen_colors: bool
    width: int
    height: int
    policy: str | None = None
    canonical: bool = True
    appearance: str = "plain"
    phrasing: str = "plain"


_ENVS: dict = {}
_PLANNERS: dict = {}


def _env(job: Job):
    """One environment per task per worker process (building a pybullet client costs ~50 ms)."""
    from threedmoe_ros.sim.cameras import default_cameras
    from threedmoe_ros.sim.env import EnvConfig, TabletopEnv

    key = (job.task, job.unseen_colors, job.width, job.height, job.policy is not None, job.canonical, job.appearance,
           job.phrasing)
    if key not in _ENVS:
        _ENVS[key] = TabletopEnv(EnvConfig(task=job.task, unseen_colors=job.unseen_colors,
                                           cameras=default_cameras(job.width, job.height),
                                           end_on_primitive_failure=job.policy is None, canonical_order=job.canonical,
                                           appearance=job.appearance, phrasing=job.phrasing))
    return _ENVS[key]


def _planner(path: str | None):
    if path is None:
        return None
    if path not in _PLANNERS:
        import torch

        from threedmoe_ros.planner import Planner

        torch.set_num_threads(1)
        _PLANNERS[path] = Planner.from_pretrained(path, horizon=1)  # only the first step is ever tried
    return _PLANNERS[path]


def record_episode(env, seed: int, path: Path, planner=None) -> tuple[bool, int]:
    """Run the oracle closed loop in `env` for `seed` (or a planner.Planner, labelled by the oracle),
    writing a bag at `path`; returns (success, steps)."""
    from threedmoe_ros.data import bags

    obs, info = env.reset(seed)
    instruction = obs["instruction"]
    names = env.joint_names
    with bags.EpisodeWriter(path) as writer:
        writer.write("/instruction", bags.string_msg(instruction), env.sim_time_ns)

        last_joint_ns = [-1]

        def observe(obs, info, plan):
            stamp = obs["cloud"].stamp_ns
            times, positions = info["joint_trajectory"]
            for t, q in zip(times, positions):
                if t > last_joint_ns[0]:  # each step's trajectory starts where the last one ended
                    writer.write("/joint_states", bags.joint_state_msg(names, q, int(t)), int(t))
                    last_joint_ns[0] = int(t)
            writer.write("/points", bags.cloud_msg(obs["cloud"], stamp), stamp)
            writer.write("/pick_place_plan", bags.plan_msg(plan, instruction, stamp, model_id="oracle"), stamp)

        while True:
            plan = env.oracle_plan()
            observe(obs, info, plan)
            step = plan[:1]
            if planner is not None:
                proposal = planner.plan(obs["cloud"], instruction, seed=seed * 100 + env.steps_taken).poses
                if len(proposal) and not env.validate(proposal):
                    step = proposal
            obs, _, terminated, truncated, info = env.step(step)
            if terminated or truncated:
                break
        observe(obs, info, env.oracle_plan() if info["reason"] != "success" else plan[:0])
        outcome = env.outcome()
        writer.write("/episode_result", bags.result_msg(outcome, env.sim_time_ns), env.sim_time_ns)
    return outcome.success, outcome.steps_taken


def _run(job: Job) -> tuple[Job, str, bool]:
    """Worker: returns (job, error or "", success). Errors come back as text, never kill the pool."""
    path = episode_dir(job.out, job.task, job.split, job.seed)
    if (path / "metadata.yaml").is_file():
        return job, "", True  # done in an earlier run
    if path.exists():
        shutil.rmtree(path)  # an interrupted bag without metadata is unreadable; redo it
    try:
        success, _ = record_episode(_env(job), job.seed, path, _planner(job.policy))
        return job, "", success
    except Exception as exc:  # noqa: BLE001 — report which episode broke and go on with the rest
        shutil.rmtree(path, ignore_errors=True)  # no half episode for the trainer to trip on; a rerun redoes it
        return job, f"{type(exc).__name__}: {exc}", False


def parse_args(argv: list[str] | None):
    from threedmoe_ros.sim.tasks import FAMILIES, resolve_tasks

    parser = argparse.ArgumentParser(prog="threedmoe-collect",
                                     description="Collect oracle demonstrations as rosbag2 (mcap) episodes.")
    parser.add_argument("--tasks", nargs="+", default=["all"],
                        help=f"task names, family names ({', '.join(FAMILIES)}), 'training-tasks' or 'all' (the "
                             "training tasks: held-out tasks are never collected)")
    parser.add_argument("--episodes", type=int, required=True, help="episodes per task")
    parser.add_argument("--split", choices=list(SPLIT_SEEDS), default="train")
    parser.add_argument("--first", type=int, default=0, help="index of the first episode (to extend a dataset)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--unseen-colors", action="store_true", help="use the held-out colours")
    parser.add_argument("--resolution", default="320x240", help="camera image WxH (default 320x240)")
    parser.add_argument("--policy", default=None, metavar="CKPT",
                        help="recovery data: this policy acts, the oracle labels every state it reaches")
    parser.add_argument("--arbitrary-order", action="store_true",
                        help="oracle takes interchangeable objects in creation order (the ablation of canonical order)")
    from threedmoe_ros.sim.env import add_split_arguments

    add_split_arguments(parser, appearance="plain", phrasing="plain")
    args = parser.parse_args(argv)

    try:
        args.tasks = resolve_tasks(args.tasks, heldout=False)
    except ValueError as e:
        parser.error(str(e))
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.first < 0 or args.first + args.episodes > SPLIT_SIZE:
        parser.error(f"--first + --episodes must stay within [0, {SPLIT_SIZE}) so splits never share seeds")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    try:
        width, height = (int(v) for v in args.resolution.lower().split("x"))
        if width < 8 or height < 8:
            raise ValueError
    except ValueError:
        parser.error(f"--resolution must look like 320x240, got '{args.resolution}'")
    args.width, args.height = width, height
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    jobs = [Job(task, args.split, seed_for(args.split, i), args.out, args.unseen_colors, args.width, args.height,
                args.policy, not args.arbitrary_order, args.appearance, args.phrasing)
            for task in args.tasks for i in range(args.first, args.first + args.episodes)]
    errors, successes = [], 0
    bar = tqdm(total=len(jobs), unit="episode", desc=f"collect {args.split}")
    if args.workers == 1:
        results = map(_run, jobs)
        pool = None
    else:
        # spawn, not fork: a forked pybullet client is not safe to use.
        pool = mp.get_context("spawn").Pool(args.workers)
        results = pool.imap_unordered(_run, jobs)
    try:
        for job, error, success in results:
            successes += success
            if error:
                errors.append(f"{job.task} seed {job.seed}: {error}")
            bar.update(1)
            bar.set_postfix(success=f"{successes}/{bar.n}")
    except KeyboardInterrupt:
        print("\ninterrupted; complete bags are kept and a rerun resumes", file=sys.stderr)
        return 130
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    print(f"{len(jobs)} episodes in {args.out}: {successes} successful, {len(errors)} errors")
    for line in errors[:20]:
        print("  error:", line, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
