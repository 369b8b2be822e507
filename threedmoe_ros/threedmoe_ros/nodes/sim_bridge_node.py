"""Sim bridge node: the PyBullet tabletop on ROS.

Steps through a list of tasks × seeds (parameters, normally from config/*.yaml). For each episode it
publishes the instruction and a fused cloud, gets a plan — from the policy over the
`pick_place_plan` topic, from the policy's `execute_instruction` action, or from the oracle — runs
it in the simulator, publishes the next cloud, and so on until the episode ends; then it publishes
an `episode_result`. Time is simulated: `/clock` and every stamp come from the simulator.

Frames: plans are executed in `world`. Clouds go out in `cloud_frame`: `world`, or a camera frame
as a real sensor's driver publishes it; that frame is mounted at the front camera's optical pose
(sim/cameras.py; REP 103: x right, y down, z forward) and announced on /tf_static, so a consumer
needs TF to use the cloud, as it would with a real camera.

Topics: out  points, instruction, joint_states, episode_result, /clock, /tf_static (world → base_link,
             world → cloud_frame); in  pick_place_plan (policy mode); action client execute_instruction (action mode).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState, PointCloud2
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage
from threedmoe_msgs.action import ExecuteInstruction
from threedmoe_msgs.msg import EpisodeResult, PickPlacePlan

from threedmoe_ros.nodes import common, frames
from threedmoe_ros.nodes import conversions as conv
from threedmoe_ros.nodes.common import LATCHED, RESULTS, doc
from threedmoe_ros.types import EpisodeOutcome

MODES = ("policy", "action", "oracle")
WORLD = "world"


@dataclass
class EpisodeSpec:
    task: str
    seed: int
    unseen_colors: bool


def episode_list(tasks: list[str], seed_start: int, episodes: int, colors: list[str]) -> list[EpisodeSpec]:
    """tasks × colour splits × seeds, in a stable order."""
    bad = [c for c in colors if c not in ("seen", "unseen")]
    if bad:
        raise ValueError(f"colors must be 'seen' and/or 'unseen', got {bad}")
    return [EpisodeSpec(t, seed_start + i, c == "unseen") for t in tasks for c in colors for i in range(episodes)]


class SimBridgeNode(Node):
    def __init__(self, name: str = "sim_bridge", **kwargs):
        super().__init__(name, **kwargs)
        self.declare_parameter("mode", "policy", doc(f"where plans come from: {', '.join(MODES)}"))
        self.declare_parameter("tasks", ["put-block-in-zone"], doc("task names (see threedmoe_ros.sim.tasks)"))
        self.declare_parameter("seed_start", 2_000_000, doc("first seed; the test split starts at 2 000 000"))
        self.declare_parameter("episodes", 3, doc("episodes per task and colour split"))
        self.declare_parameter("colors", ["unseen"], doc("colour splits to run: seen, unseen"))
        self.declare_parameter("appearance", "plain", doc("appearance randomization: plain, train or shifted (sim/appearance.py)"))
        self.declare_parameter("phrasing", "plain", doc("instruction phrasing: plain, train or heldout (sim/phrasing.py)"))
        self.declare_parameter("steps_per_plan", 1, doc("steps of each plan executed before re-planning (0 = all)"))
        self.declare_parameter("plan_timeout_s", 30.0, doc("wall-clock wait for a plan before the episode ends with 'timeout'"))
        self.declare_parameter("resend_s", 5.0, doc("send the cloud again when no plan answered it within this time"))
        self.declare_parameter("camera_width", 320, doc("camera image width, pixels"))
        self.declare_parameter("camera_height", 240, doc("camera image height, pixels"))
        self.declare_parameter("cloud_frame", WORLD, doc(
            "frame the clouds are published in: world, or a camera frame (e.g. front_camera_optical_frame) mounted "
            "at the front camera's optical pose and announced on /tf_static; plans are executed in world either way"))
        self.declare_parameter("labels", True, doc(
            "publish the clouds' instance labels (a label field); false sends what a camera gives, x y z rgb only"))
        self.declare_parameter("start_delay_s", 1.0, doc("wait before the first episode, for subscribers to connect"))
        self.declare_parameter("wait_for_subscribers", ["points"], doc("topics that must have a subscriber before starting"))
        self.declare_parameter("exit_when_done", True, doc("shut down after the last episode"))
        p = {name: param.value for name, param in self.get_parameters_by_prefix("").items()}
        if p["mode"] not in MODES:
            raise ValueError(f"parameter mode={p['mode']!r} is not one of {MODES}")
        if p["cloud_frame"] in ("", "base_link"):
            raise ValueError(f"parameter cloud_frame={p['cloud_frame']!r}: name world or a camera frame")
        from threedmoe_ros.sim.appearance import appearance
        from threedmoe_ros.sim.phrasing import check_phrasing

        appearance(p["appearance"]), check_phrasing(p["phrasing"])  # raise ValueError naming the known splits
        self.params = p
        self.episodes = episode_list(list(p["tasks"]), p["seed_start"], p["episodes"], list(p["colors"]))

        # Reliable: matches best-effort (sensor-data) subscribers too, and a ~0.6 MB fused cloud sent
        # best effort over UDP is often lost whole when the machine is busy. Depth 5 so a recorder
        # gets every cloud; a policy subscribes with depth 1 and so only ever sees the newest.
        self.points_pub = self.create_publisher(PointCloud2, "points", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        self.joints_pub = self.create_publisher(JointState, "joint_states", 100)
        self.result_pub = self.create_publisher(EpisodeResult, "episode_result", RESULTS)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        # Oracle plans go out on the same topic a policy would use, so recorders see one layout.
        self.plan_pub = self.create_publisher(PickPlacePlan, "pick_place_plan", LATCHED) if p["mode"] == "oracle" else None
        self.create_subscription(PickPlacePlan, "pick_place_plan", self._on_plan, LATCHED)
        self.action = ActionClient(self, ExecuteInstruction, "execute_instruction") if p["mode"] == "action" else None
        self._plan_cv = threading.Condition()
        self._plan: PickPlacePlan | None = None
        self._waiting_stamp: int | None = None
        self.outcomes: list[EpisodeOutcome] = []
        self.done = threading.Event()
        self._stopping = threading.Event()  # set on shut-down: the episode loop ends quietly
        # World points → cloud_frame, inverted once: the pose of cloud_frame in world is what /tf_static says.
        self._world_to_cloud_frame = np.linalg.inv(self._tf_static())
        self.get_logger().info(
            f"sim_bridge ready: mode {p['mode']}, episodes {len(self.episodes)} ({', '.join(p['tasks'])} × "
            f"{', '.join(p['colors'])} × {p['episodes']} from seed {p['seed_start']}), appearance {p['appearance']}, "
            f"phrasing {p['phrasing']}, cameras {p['camera_width']}×{p['camera_height']}, cloud frame '{p['cloud_frame']}', "
            f"clouds {'with' if p['labels'] else 'without'} instance labels")
        self._thread = threading.Thread(target=self._run, name="episodes", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ plans in

    def _on_plan(self, msg: PickPlacePlan) -> None:
        """Keep the plan that answers the cloud being waited on (matched by stamp); others are ignored."""
        try:
            stamp = conv.stamp_ns(msg.header)
        except Exception as exc:  # noqa: BLE001 - a malformed plan from any client must not end the executor
            self.get_logger().warning(f"ignored a pick_place_plan with an unreadable stamp: {exc}")
            return
        with self._plan_cv:
            if self._waiting_stamp is not None and stamp == self._waiting_stamp:
                self._plan = msg
                self._plan_cv.notify_all()

    def _wait_plan(self, cloud_msg: PointCloud2) -> PickPlacePlan | None:
        """The plan answering this cloud; the cloud is sent again every `resend_s` in case it was lost."""
        deadline = time.monotonic() + self.params["plan_timeout_s"]
        with self._plan_cv:
            while self._running() and time.monotonic() < deadline:
                if self._plan_cv.wait_for(lambda: self._plan is not None or self._stopping.is_set(),
                                          timeout=self.params["resend_s"]):
                    break
                self.points_pub.publish(cloud_msg)
            plan, self._plan, self._waiting_stamp = self._plan, None, None
            return plan

    # ------------------------------------------------------------------ episodes

    def _run(self) -> None:
        try:
            self._wait_for_subscribers()
            envs: dict = {}
            for spec in self.episodes:
                if not self._running():
                    return
                env = envs.get((spec.task, spec.unseen_colors)) or self._make_env(spec)
                envs[(spec.task, spec.unseen_colors)] = env
                outcome = self._episode(env, spec)
                self.outcomes.append(outcome)
                self._flush()  # the result must not overtake the episode's last (large) clouds
                self.result_pub.publish(conv.outcome_to_msg(outcome, env.sim_time_ns))
                self.get_logger().info(
                    f"{spec.task} seed {spec.seed} ({'unseen' if spec.unseen_colors else 'seen'}): "
                    f"{'success' if outcome.success else 'failure'} ({outcome.reason}) in {outcome.steps_taken} steps")
            for env in envs.values():
                env.close()
            n = sum(o.success for o in self.outcomes)
            self.get_logger().info(f"all {len(self.outcomes)} episodes done: {n} successful")
        except Exception as exc:  # noqa: BLE001 - a broken episode loop must be loud, not a silent thread death
            if self._running():
                self.get_logger().error(f"episode loop stopped: {type(exc).__name__}: {exc}")
            # else: Ctrl-C shut the node down under the loop (a publish or an ack wait then fails); that is no error.
        finally:
            self.done.set()

    def _wait_for_subscribers(self) -> None:
        deadline = time.monotonic() + 60
        topics = list(self.params["wait_for_subscribers"])
        while self._running() and time.monotonic() < deadline and any(self.count_subscribers(t) == 0 for t in topics):
            time.sleep(0.1)
        time.sleep(self.params["start_delay_s"])

    def _make_env(self, spec: EpisodeSpec):
        from threedmoe_ros.sim.cameras import default_cameras
        from threedmoe_ros.sim.env import EnvConfig, TabletopEnv

        cameras = default_cameras(self.params["camera_width"], self.params["camera_height"])
        return TabletopEnv(EnvConfig(task=spec.task, unseen_colors=spec.unseen_colors, cameras=cameras,
                                     appearance=self.params["appearance"], phrasing=self.params["phrasing"]))

    def _publish_state(self, env, obs: dict, info: dict) -> PointCloud2:
        """Joint states since the last observation, the clock, then the cloud (returned)."""
        times, positions = info["joint_trajectory"]
        names = info["joint_names"]
        for t, q in zip(times, positions):
            self.joints_pub.publish(conv.joint_state_msg(names, q, int(t)))
        self.clock_pub.publish(Clock(clock=conv.time_msg(env.sim_time_ns)))
        cloud = obs["cloud"]
        if not self.params["labels"]:
            cloud = cloud.unlabelled()
        if self.params["cloud_frame"] != WORLD:  # as the camera's driver would send it
            cloud = frames.transform_cloud(cloud, self._world_to_cloud_frame, self.params["cloud_frame"])
        stamp = env.sim_time_ns
        with self._plan_cv:
            self._plan, self._waiting_stamp = None, stamp
        msg = conv.cloud_to_msg(cloud, stamp)
        self.points_pub.publish(msg)
        return msg

    def _episode(self, env, spec: EpisodeSpec) -> EpisodeOutcome:
        obs, info = env.reset(spec.seed)
        self.instruction_pub.publish(String(data=obs["instruction"]))
        self._flush()  # the instruction opens the episode for recorders: it goes first
        goal = None
        if self.action is not None:
            goal = self._send_goal(obs["instruction"], env.step_limit)
            if goal is None:
                return self._end(env, "aborted", "the execute_instruction action server did not accept the goal")
        k = self.params["steps_per_plan"]
        try:
            while self._running():
                cloud_msg = self._publish_state(env, obs, info)
                stamp = conv.stamp_ns(cloud_msg.header)
                if self.params["mode"] == "oracle":
                    poses = env.oracle_plan()
                    self.plan_pub.publish(conv.plan_to_msg(poses, obs["instruction"], stamp, 0.0, "oracle", WORLD))
                else:
                    msg = self._wait_plan(cloud_msg)
                    if msg is None and not self._running():
                        break
                    if msg is None:
                        return self._end(env, "timeout", f"no plan within {self.params['plan_timeout_s']:.0f} s of wall time")
                    poses = conv.plan_from_msg(msg)
                obs, _, terminated, truncated, info = env.step(poses[:k] if k > 0 else poses)
                if info["reason"] == "invalid_plan":
                    self.get_logger().warning(f"plan rejected: {info['detail']}")
                if terminated or truncated:
                    self._publish_state(env, obs, info)
                    return env.outcome()
            return self._end(env, "aborted", "shut down during the episode")
        finally:
            if goal is not None:
                goal.cancel_goal_async()

    def _flush(self, timeout_s: float = 5.0) -> None:
        """Wait until reliable subscribers have every message sent so far (DDS does not order topics)."""
        from rclpy.duration import Duration

        for pub in (self.points_pub, self.joints_pub, self.instruction_pub, self.plan_pub):
            if pub is None or not self._running():
                continue
            try:
                acked = pub.wait_for_all_acked(Duration(seconds=timeout_s))
            except Exception:  # noqa: BLE001 - rcl fails the wait when Ctrl-C shuts the node down meanwhile
                if not self._running():
                    return
                raise
            if not acked and self._running():
                self.get_logger().warning(f"{pub.topic_name}: not every subscriber acknowledged within {timeout_s:.0f} s")

    def _running(self) -> bool:
        return rclpy.ok() and not self._stopping.is_set()

    def stop(self) -> None:
        """Shut-down (Ctrl-C, or the last episode done): let the episode loop end before the node is destroyed."""
        self._stopping.set()
        with self._plan_cv:
            self._plan_cv.notify_all()
        self._thread.join(timeout=2.0)
        time.sleep(0.5)  # let the last messages (the final episode_result) reach their subscribers

    def _end(self, env, reason: str, detail: str) -> EpisodeOutcome:
        o = env.outcome()
        return EpisodeOutcome(o.task, o.seed, o.instruction, o.unseen_colors, o.steps_taken, o.reward, False, reason, detail)

    def _send_goal(self, instruction: str, max_steps: int):
        if not self.action.wait_for_server(timeout_sec=self.params["plan_timeout_s"]):
            return None
        future = self.action.send_goal_async(ExecuteInstruction.Goal(instruction=instruction, max_steps=max_steps))
        deadline = time.monotonic() + self.params["plan_timeout_s"]
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        handle = future.result() if future.done() else None
        return handle if handle is not None and handle.accepted else None

    def _tf_static(self) -> np.ndarray:
        """world → base_link (the arm stands at the origin) and world → cloud_frame on /tf_static, latched
        as tf2's static broadcaster does; returns the (4, 4) pose of cloud_frame in world."""
        from threedmoe_ros.sim.cameras import default_cameras

        mounts, camera = {"base_link": np.eye(4)}, np.eye(4)
        if self.params["cloud_frame"] != WORLD:
            front = default_cameras()[0]
            camera[:3, :3], camera[:3, 3] = front.rotation(), front.eye
            mounts[self.params["cloud_frame"]] = camera
        self._tf_pub = self.create_publisher(TFMessage, "/tf_static", frames.TF_STATIC_QOS)
        self._tf_pub.publish(TFMessage(transforms=[frames.transform_msg(WORLD, child, t) for child, t in mounts.items()]))
        return camera


def main(args: list[str] | None = None) -> None:
    common.run(SimBridgeNode, done=lambda node: node.done.is_set() and node.params["exit_when_done"],
               executor=lambda: MultiThreadedExecutor(num_threads=2), on_exit=lambda node: node.stop(), args=args,
               node_class=SimBridgeNode)


if __name__ == "__main__":
    main()
