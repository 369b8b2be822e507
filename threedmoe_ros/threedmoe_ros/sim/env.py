"""The tabletop environment with a Gymnasium-style face.

    env = TabletopEnv(EnvConfig(task="put-block-in-zone"))
    obs, info = env.reset(seed=3)
    while True:
        obs, reward, terminated, truncated, info = env.step(env.oracle_plan())
        if terminated or truncated:
            break
    env.outcome()  # EpisodeOutcome

step(plan) runs every step of `plan` (T, 2, 7) in order — pass plan[:k] to run only k; it stops
early when the task succeeds, a step fails or the step limit is reached. A plan is
checked as a whole before anything moves: NaN, poses outside the workspace, tilted beyond what a
suction tool can use, or out of the arm's reach reject the plan with reason "invalid_plan" in
`info`; nothing is executed and the episode goes on. An episode ends (terminated) on success, on a
primitive that failed (configurable), or on an empty plan (the caller says it is done); it is cut
(truncated) at the task's step limit, after too many rejected plans, or when its simulated time is up.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pybullet as p

from threedmoe_ros.sim import assets
from threedmoe_ros.sim.appearance import APPEARANCE, LOOK_STREAM, NOISE_STREAM, AppearanceConfig, Look, appearance, sample_look
from threedmoe_ros.sim.cameras import CameraConfig, FusionConfig, default_cameras, downsample, fuse, heightmap, render
from threedmoe_ros.sim.phrasing import PHRASINGS, check_phrasing, phrasing_for
from threedmoe_ros.sim.oracle import oracle_plan
from threedmoe_ros.sim.primitive import PrimitiveConfig, go_home, pick_place, settle
from threedmoe_ros.sim.robot import Arm, Robot
from threedmoe_ros.sim.scene import SamplingError, Scene
from threedmoe_ros.sim.tasks import Episode, get_task
from threedmoe_ros.types import Cloud, EpisodeOutcome, as_plan

SUCCESS, STEP_LIMIT, PRIMITIVE_FAILED, INVALID_PLAN, TIMEOUT, ABORTED = (
    "success", "step_limit", "primitive_failed", "invalid_plan", "timeout", "aborted",
)


@dataclass
class EnvConfig:
    """Everything that changes what an episode looks like or how it is scored."""

    task: str = "put-block-in-zone"
    """Task name (see sim.tasks.TASKS)."""
    unseen_colors: bool = False
    """Draw colours from the held-out split (CLIPort's unseen colours) instead of the training split."""
    cameras: list[CameraConfig] = field(default_factory=default_cameras)
    """RGB-D cameras fused into the observation cloud (3 × 320×240 D415-like by default)."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    observe: bool = True
    """Render a cloud for every observation. False skips rendering (oracle evaluation); obs["cloud"] is then empty."""
    primitive: PrimitiveConfig = field(default_factory=PrimitiveConfig)
    timestep: float = 1.0 / 240.0
    """Physics step, s. 240 Hz keeps 3 cm blocks from sinking into each other in towers."""
    solver_iterations: int = 30
    max_tilt_deg: float = 30.0
    """Largest angle between a pose's tool axis and straight down that a suction cup can use."""
    reach_tolerance: float = 0.01
    """A pose whose best IK solution misses by more than this (m) is unreachable."""
    end_on_primitive_failure: bool = True
    """End the episode when a primitive fails (honest scoring); False lets the caller try again."""
    max_invalid_plans: int = 10
    """Rejected plans allowed before the episode is cut (a policy stuck on bad output must end)."""
    max_sim_time_s: float = 600.0
    """Simulated-time budget of an episode; past it the episode ends with reason "timeout"."""
    canonical_order: bool = True
    """The oracle takes interchangeable objects in reading order (sim/tasks.py); False: in the order the
    scene created them, which no observation shows (kept to measure what canonical order buys)."""
    appearance: AppearanceConfig | str | None = None
    """Appearance randomization (sim/appearance.py): a split name ("plain", "train", "shifted"), its
    ranges, or None for the original assets' fixed look."""
    phrasing: str = "plain"
    """Instruction phrasing split (sim/phrasing.py): "plain" (the task's own templates), "train" or "heldout"."""

    @property
    def appearance_name(self) -> str:
        return "plain" if self.appearance is None else self.appearance.name

    def __post_init__(self) -> None:
        get_task(self.task)  # raises KeyError naming the known tasks
        if isinstance(self.appearance, str):
            self.appearance = appearance(self.appearance)  # raises ValueError naming the known splits
        check_phrasing(self.phrasing)
        if not self.cameras:
            raise ValueError("EnvConfig.cameras is empty; an observation needs at least one camera")
        if not 0 < self.timestep <= 0.02:
            raise ValueError(f"EnvConfig.timestep {self.timestep} s is outside (0, 0.02]")
        if not 0 <= self.max_tilt_deg <= 90:
            raise ValueError("EnvConfig.max_tilt_deg must be in [0, 90]")
        if self.reach_tolerance <= 0 or self.max_invalid_plans < 1 or self.max_sim_time_s <= 0:
            raise ValueError("EnvConfig: reach_tolerance, max_invalid_plans and max_sim_time_s must be > 0")


class TabletopEnv:
    """A LoHoRavens-style tabletop: UR5-like arm with suction, blocks, bowls, zones, RGB-D cameras.

    obs:  {"cloud": Cloud (world frame, cropped to the workspace, label 0 = table, objects 1..K),
           "instruction": str}
    info: task, family, seed, unseen_colors, instruction, steps_taken, step_limit, reward, success,
          reason ("" while the episode runs, else an EpisodeResult reason; "invalid_plan" for a
          rejected plan), detail (what went wrong), objects (label, kind, color, size, extent,
          position, quaternion per object), targets (labels the instruction is about),
          sim_time_ns, joint_names, joint_trajectory ((N,) ns, (N, 6) rad: the arm at 30 Hz since
          the last call), heightmap + colormap (top-down, 3.125 mm cells, when observing),
          outcome (EpisodeOutcome, once the episode has ended).
    """

    def __init__(self, config: EnvConfig | None = None):
        self.config = config or EnvConfig()
        self.task = get_task(self.config.task)
        self.client = p.connect(p.DIRECT)
        self.arm = Arm()
        self.scene: Scene | None = None
        self.episode: Episode | None = None
        self.robot: Robot | None = None
        self.seed = 0
        self._outcome: EpisodeOutcome | None = None
        self._last_cloud: Cloud | None = None
        self._last_heightmap: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------ gym face

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Build the scene of `seed` (same seed → same scene, instruction and oracle plan)."""
        self.seed = int(seed) if seed is not None else self.seed + 1
        rng = np.random.default_rng(self.seed)
        for _ in range(20):
            try:
                self._build(rng)
                break
            except SamplingError:
                continue  # the rng has moved on, so the retry is different and still deterministic
        else:
            raise SamplingError(f"{self.task.name}: could not sample a scene for seed {self.seed}")
        self.steps_taken = 0
        self.invalid_plans = 0
        self.step_limit = self.task.step_limit(len(self.oracle_plan()))
        self._outcome = None
        self.reward = self._reward()
        return self._obs(), self._info(reason="", detail="")

    def step(self, plan) -> tuple[dict, float, bool, bool, dict]:
        if self.scene is None:
            raise RuntimeError("call reset() before step()")
        if self._outcome is not None:
            raise RuntimeError(f"the episode has ended ({self._outcome.reason}); call reset()")
        self.robot.start_joint_log()
        try:
            plan = as_plan(plan) if np.size(plan) else np.zeros((0, 2, 7))
            error = self.validate(plan)
        except ValueError as exc:
            plan, error = None, str(exc)
        if error:
            self.invalid_plans += 1
            cut = self.invalid_plans >= self.config.max_invalid_plans
            if cut:
                self._finish(INVALID_PLAN, f"{self.invalid_plans} plans rejected; last: {error}")
            return self._obs(render=False), self.reward, False, cut, self._info(INVALID_PLAN, error)

        if len(plan) == 0:
            done = self._reward() >= 1.0
            self._finish(SUCCESS if done else ABORTED, "" if done else "empty plan: the caller declared the task done")
            return self._obs(render=False), self.reward, True, False, self._info(self._outcome.reason, self._outcome.detail)

        reason, detail = "", ""
        for k, (pick, place) in enumerate(plan):
            result = pick_place(self.robot, pick, place, self.scene.movable, self.scene.obstacles, self.config.primitive)
            self.steps_taken += 1
            self.reward = self._reward()
            if not result.ok:
                reason, detail = PRIMITIVE_FAILED, f"step {k}: {result.detail}"
                if self.config.end_on_primitive_failure:
                    break
            if self.reward >= 1.0:
                reason, detail = SUCCESS, ""
                break
            if self.steps_taken >= self.step_limit:
                reason, detail = STEP_LIMIT, f"{self.steps_taken} steps taken, the limit for this episode"
                break
            if self.robot.time > self.config.max_sim_time_s:
                reason, detail = TIMEOUT, f"simulated time {self.robot.time:.0f} s exceeds {self.config.max_sim_time_s:.0f} s"
                break
        go_home(self.robot, self.config.primitive)
        if reason == PRIMITIVE_FAILED and not self.config.end_on_primitive_failure:
            terminated = truncated = False
        else:
            terminated = reason in (SUCCESS, PRIMITIVE_FAILED)
            truncated = reason in (STEP_LIMIT, TIMEOUT)
        if terminated or truncated:
            self._finish(reason, detail)
        return self._obs(), self.reward, terminated, truncated, self._info(reason, detail)

    def oracle_plan(self) -> np.ndarray:
        """The oracle's remaining plan (T, 2, 7) from the current state; T = 0 when the task is done."""
        return oracle_plan(self.scene, self.episode, canonical=self.config.canonical_order)

    def outcome(self) -> EpisodeOutcome:
        """How the episode ended, or how it stands now (reason "" while it runs)."""
        if self._outcome is not None:
            return self._outcome
        return self._make_outcome("", "")

    def close(self) -> None:
        if self.client is not None and p.isConnected(self.client):
            p.disconnect(self.client)
            self.arm.close()
        self.client = None

    def __enter__(self) -> "TabletopEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ robot state (the ROS bridge publishes these)

    @property
    def instruction(self) -> str:
        return self.episode.instruction

    @property
    def joint_names(self) -> list[str]:
        return list(self.robot.joint_names)

    def joint_positions(self) -> np.ndarray:
        """The arm's joints as last published (the IK solution for the tool at the last 30 Hz tick)."""
        return self.robot.joint_log[-1][1].copy()

    @property
    def sim_time_ns(self) -> int:
        return int(round(self.robot.time * 1e9))

    # ------------------------------------------------------------ plan checks

    def validate(self, plan: np.ndarray) -> str:
        """'' when every pose of `plan` can be executed, else what is wrong with the first bad one.

        The rules that need no physics are the shared plan validator's (threedmoe_ros.validation,
        which the policy node applies before it publishes); the exact IK reach check is added here.
        """
        from threedmoe_ros.validation import validate_plan

        error = validate_plan(plan, max_tilt_deg=self.config.max_tilt_deg, reach=False)
        if error:
            return error
        for k, step in enumerate(plan):
            for which, pose in (("pick", step[0]), ("place", step[1])):
                xyz, q = pose[:3], pose[3:] / np.linalg.norm(pose[3:])
                miss, _ = self.robot.reach_error(xyz, q)
                if miss > self.config.reach_tolerance:
                    return (f"step {k} {which} position ({xyz[0]:.3f}, {xyz[1]:.3f}, {xyz[2]:.3f}) is out of the arm's "
                            f"reach (IK misses by {miss * 100:.1f} cm)")
        return ""

    # ------------------------------------------------------------ internals

    def _build(self, rng: np.random.Generator) -> None:
        c = self.client
        p.resetSimulation(physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        p.setPhysicsEngineParameter(fixedTimeStep=self.config.timestep, numSolverIterations=self.config.solver_iterations,
                                    deterministicOverlappingPairs=1, physicsClientId=c)
        cfg = self.config
        self.look = None if cfg.appearance is None else \
            sample_look(cfg.appearance, np.random.default_rng([self.seed, LOOK_STREAM, self.task.stream]), len(cfg.cameras))
        self.table = assets.make_table(c, assets.TABLE_COLOR if self.look is None else self.look.table_rgb)
        self.robot = Robot(c, cfg.timestep, self.arm)
        self.scene = Scene(c, rng, cfg.unseen_colors, self.look, phrasing_for(cfg.phrasing, [self.seed, self.task.stream]))
        self.episode = self.task.build(self.scene)
        self.scene.add_distractors(self.task.distractors, avoid=self.episode.keep_out)
        self.cameras = cfg.cameras if self.look is None else _jittered(cfg.cameras, self.look)
        self.observations = 0
        settle(self.robot, self.scene.movable, 1.0)
        self.robot.start_joint_log()
        self._last_cloud = None

    def _reward(self) -> float:
        return float(self.episode.reward_fn(self.scene.objects, self.scene.poses()))

    def _obs(self, render: bool = True) -> dict:
        if render or self._last_cloud is None:
            self._last_cloud, self._last_heightmap = self._observe()
        return {"cloud": self._last_cloud, "instruction": self.episode.instruction}

    def _observe(self) -> tuple[Cloud, tuple[np.ndarray, np.ndarray] | None]:
        if not self.config.observe:
            return Cloud(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)), None
        light = None if self.look is None else self.look.light
        frames = [render(self.client, cam, light) for cam in self.cameras]
        if self.look is not None and (self.look.depth_noise > 0 or self.look.dropout > 0):
            rng = np.random.default_rng([self.seed, NOISE_STREAM, self.task.stream, self.observations])
            frames = [frame.degraded(self.look.depth_noise, self.look.dropout, rng) for frame in frames]
        self.observations += 1
        labels = {o.body: o.label for o in self.scene.objects}
        cloud = fuse(frames, self.cameras, labels, set(self.robot.bodies), self.config.fusion)
        maps = heightmap(cloud, self.config.fusion.bounds[:2])
        cloud = downsample(cloud, self.config.fusion.voxel)
        cloud.stamp_ns = self.sim_time_ns
        return cloud, maps

    def _info(self, reason: str, detail: str) -> dict:
        times = np.array([int(round(t * 1e9)) for t, _ in self.robot.joint_log], dtype=np.int64)
        info = {
            "task": self.task.name,
            "family": self.task.family,
            "seed": self.seed,
            "unseen_colors": self.config.unseen_colors,
            "appearance": self.config.appearance_name,
            "phrasing": self.config.phrasing,
            "instruction": self.episode.instruction,
            "steps_taken": self.steps_taken,
            "step_limit": self.step_limit,
            "reward": self.reward,
            "success": self.reward >= 1.0,
            "reason": reason,
            "detail": detail,
            "objects": self.scene.describe(),
            "targets": [self.scene.objects[i].label for i in self.episode.targets],
            "sim_time_ns": self.sim_time_ns,
            "joint_names": self.joint_names,
            "joint_trajectory": (times, np.stack([q for _, q in self.robot.joint_log])),
        }
        if self._last_heightmap is not None:
            info["heightmap"], info["colormap"] = self._last_heightmap
        if self._outcome is not None:
            info["outcome"] = self._outcome
        return info

    def _make_outcome(self, reason: str, detail: str) -> EpisodeOutcome:
        return EpisodeOutcome(
            task=self.task.name, seed=self.seed, instruction=self.episode.instruction,
            unseen_colors=self.config.unseen_colors, steps_taken=self.steps_taken, reward=self.reward,
            success=self.reward >= 1.0 and reason == SUCCESS, reason=reason, detail=detail,
            extra={"sim_time_s": self.robot.time, "step_limit": self.step_limit,
                   "appearance": self.config.appearance_name, "phrasing": self.config.phrasing},
        )

    def _finish(self, reason: str, detail: str) -> None:
        self._outcome = self._make_outcome(reason, detail)


def _jittered(cameras: list[CameraConfig], look: Look) -> list[CameraConfig]:
    """The cameras an episode's look keeps, each eye and target moved by its jitter."""
    out = []
    for index, (eye, target) in zip(look.cameras, look.camera_offsets):
        cam = cameras[index]
        out.append(dataclasses.replace(cam, eye=tuple(np.add(cam.eye, eye)), target=tuple(np.add(cam.target, target))))
    return out


def add_split_arguments(parser: argparse.ArgumentParser, appearance: str, phrasing: str) -> None:
    """--appearance and --phrasing, shared by collection and evaluation (sim/appearance.py, sim/phrasing.py)."""
    parser.add_argument("--appearance", choices=list(APPEARANCE), default=appearance,
                        help="appearance randomization: plain (the original assets), train (the training ranges) or "
                             f"shifted (ranges outside them, evaluation only); default {appearance}")
    parser.add_argument("--phrasing", choices=list(PHRASINGS), default=phrasing,
                        help="instruction phrasing: plain (the task templates), train (the grammar's training part) or "
                             f"heldout (words and templates training never draws); default {phrasing}")
