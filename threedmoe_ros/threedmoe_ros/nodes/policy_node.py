"""Policy node: point cloud + instruction in, pick-and-place plan out.

A LifecycleNode in the style of yolo_ros: parameters are declared in __init__, the model is loaded
on configure and freed on cleanup, publishers are lifecycle publishers that only publish while
active. It translates messages and calls the Policy facade; it holds no model logic.

Threading: subscription callbacks only validate input and keep the *newest* cloud (older ones are
dropped, never queued); a guard condition wakes the inference callback, which runs in its own
mutually exclusive callback group on a MultiThreadedExecutor, so a slow plan never blocks the
subscriptions and there is never more than one cloud waiting.

Topics (relative names; remap as needed):
  in   points (sensor_msgs/PointCloud2, sensor-data QoS)   instruction, question (std_msgs/String)
       episode_result (threedmoe_msgs/EpisodeResult; ends an ExecuteInstruction goal)
  out  pick_place_plan (threedmoe_msgs/PickPlacePlan, reliable + transient-local, depth 1)
       pick_place_poses (geometry_msgs/PoseArray)   pick_place_markers (visualization_msgs/MarkerArray)
       answer (std_msgs/String)   status (threedmoe_msgs/InputStatus: every rejected input, with why)
  action  execute_instruction (threedmoe_msgs/action/ExecuteInstruction)
"""

from __future__ import annotations

import threading
import time
import unicodedata
from dataclasses import dataclass

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String
from threedmoe_msgs.action import ExecuteInstruction
from threedmoe_msgs.msg import EpisodeResult, InputStatus, PickPlacePlan
from visualization_msgs.msg import MarkerArray

from threedmoe_ros.data.pointcloud2 import CloudError
from threedmoe_ros.nodes import common
from threedmoe_ros.nodes import conversions as conv
from threedmoe_ros.nodes.common import LATCHED, doc
from threedmoe_ros.types import Cloud

# Depth 1: only the newest cloud matters; DDS itself must not queue older ones either.
POINTS_QOS = {
    "sensor_data": QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE),
    "reliable": QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE),
}


def check_text(text: str, max_chars: int, what: str = "instruction") -> str:
    """The stripped text, or ValueError naming what is wrong with it."""
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{what} is empty; send a sentence such as 'put the red block in the green zone'")
    if len(text) > max_chars:
        raise ValueError(f"{what} has {len(text)} characters, more than the limit of {max_chars}")
    bad = sorted({f"U+{ord(c):04X}" for c in stripped if unicodedata.category(c) == "Cc" and c not in "\t\n"})
    if bad:
        raise ValueError(f"{what} contains control characters ({', '.join(bad[:5])}); send plain text")
    return stripped


@dataclass
class Goal:
    """The ExecuteInstruction goal being served: counts steps and collects the plans published for it."""

    instruction: str
    max_steps: int
    steps_done: int = 0
    result: EpisodeResult | None = None


class PolicyNode(LifecycleNode):
    def __init__(self, name: str = "policy", **kwargs):
        super().__init__(name, **kwargs)
        self.declare_parameter("checkpoint", "", doc("policy checkpoint directory; empty = the embedded default"))
        self.declare_parameter("device", "cpu", doc("torch device: cpu, cuda, cuda:1 ..."))
        self.declare_parameter("dtype", "float32", doc("float32, float16 or bfloat16"))
        self.declare_parameter("torch_threads", 1, doc(
            "CPU threads for torch (0 = torch's default); one is fastest for a small head beside ROS's own threads"))
        self.declare_parameter("optimize", True, doc("plan with a TorchScript-frozen copy of the head (same plans, ~1.5x faster)"))
        self.declare_parameter("sampling_steps", 4, doc("rectified-flow Euler steps (0 = the checkpoint's default)"))
        self.declare_parameter("refine", False, doc("snap plan positions onto the objects of a labelled cloud (models/refine.py)"))
        self.declare_parameter("horizon", 0, doc("most steps a published plan holds (0 = the model's horizon)"))
        self.declare_parameter("steps_per_plan", 0, doc("steps of each plan to publish for execution before re-planning (0 = all)"))
        self.declare_parameter("seed", -1, doc("sampling seed per plan (-1 = the policy's own generator)"))
        self.declare_parameter("points_qos", "sensor_data", doc(
            "QoS of the points subscription: sensor_data (best effort, as drivers publish) or reliable "
            "(needed for clouds over ~1 MB: Fast DDS drops large best-effort messages over UDP)"))
        self.declare_parameter("frames", ["world"], doc("cloud frames accepted (no tf here: clouds must come in one of these)"))
        self.declare_parameter("max_points", 2_000_000, doc("clouds with more points are rejected"))
        self.declare_parameter("max_instruction_chars", 512, doc("longer instructions/questions are rejected"))
        self.declare_parameter("model_id", "", doc("name written into each plan (default: the checkpoint's directory name)"))
        self.declare_parameter("autostart", True, doc("configure and activate on start (no lifecycle manager needed)"))
        self.policy = None
        self._lock = threading.Lock()
        self._newest: Cloud | None = None
        self._instruction: str | None = None
        self._goal: Goal | None = None
        self._plan_event = threading.Condition(self._lock)
        self._active = False
        self._created: list = []
        # Status is a plain publisher: bad input is reported even while the node is inactive.
        self.status_pub = self.create_publisher(InputStatus, "status", 10)

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, load the model onto its device, create publishers and subscriptions."""
        from threedmoe_ros.checkpoints import DEFAULT_POLICY
        from threedmoe_ros.policy import Policy

        p = self.params = {name: param.value for name, param in self.get_parameters_by_prefix("").items()}
        if p["points_qos"] not in POINTS_QOS:
            self.get_logger().error(f"points_qos {p['points_qos']!r} is not one of {sorted(POINTS_QOS)}")
            return TransitionCallbackReturn.FAILURE
        path = p["checkpoint"] or str(DEFAULT_POLICY)
        try:
            import torch

            if p["torch_threads"] > 0:
                torch.set_num_threads(p["torch_threads"])
            dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[p["dtype"]]
            policy = Policy.from_pretrained(path, map_location=p["device"])
            self.policy = policy.to(dtype=dtype) if dtype != torch.float32 else policy
            if p["optimize"]:
                self.policy.optimize_for_inference()
            self._warm_up()
        except KeyError:
            self.get_logger().error(f"dtype {p['dtype']!r} is not one of float32, float16, bfloat16")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - any load failure is a configure failure, logged with its reason
            self.get_logger().error(f"cannot load the policy: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.model_id = p["model_id"] or path.rstrip("/").split("/")[-1]
        self.get_logger().info(f"loaded policy {path} on {p['device']} ({p['dtype']})")

        infer_group = MutuallyExclusiveCallbackGroup()
        io_group = ReentrantCallbackGroup()
        self.plan_pub = self.create_lifecycle_publisher(PickPlacePlan, "pick_place_plan", LATCHED)
        self.poses_pub = self.create_lifecycle_publisher(PoseArray, "pick_place_poses", 10)
        self.markers_pub = self.create_lifecycle_publisher(MarkerArray, "pick_place_markers", 10)
        self.answer_pub = self.create_lifecycle_publisher(String, "answer", 10)
        self._guard = self.create_guard_condition(self._infer, callback_group=infer_group)
        self._created = [
            self.create_subscription(PointCloud2, "points", self._on_points, POINTS_QOS[p["points_qos"]],
                                     callback_group=io_group),
            self.create_subscription(String, "instruction", self._on_instruction, LATCHED, callback_group=io_group),
            self.create_subscription(String, "question", self._on_question, 10, callback_group=infer_group),
            self.create_subscription(EpisodeResult, "episode_result", self._on_result, 10, callback_group=io_group),
        ]
        self._action = ActionServer(
            self, ExecuteInstruction, "execute_instruction", self._execute,
            goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )
        return TransitionCallbackReturn.SUCCESS

    def _warm_up(self) -> None:
        """Plan twice on a synthetic scene, so the first real cloud does not pay for lazy
        initialisation (TorchScript profiles its first calls; allocators warm up)."""
        import numpy as np

        rng = np.random.default_rng(0)
        xyz = np.c_[rng.uniform(0.3, 0.7, 512), rng.uniform(-0.4, 0.4, 512), rng.uniform(0, 0.04, 512)]
        cloud = Cloud(xyz, np.full((512, 3), 128), np.repeat([0, 1], 256))
        for _ in range(2):
            self.policy.plan(cloud, "put the red block in the green zone", seed=0)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model (and GPU memory) and drop publishers and subscriptions."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self._active = False
        for sub in self._created:
            self.destroy_subscription(sub)
        self._created = []
        if getattr(self, "_action", None) is not None:
            self._action.destroy()
            self._action = None
        for name in ("plan_pub", "poses_pub", "markers_pub", "answer_pub"):
            if getattr(self, name, None) is not None:
                self.destroy_lifecycle_publisher(getattr(self, name))
                setattr(self, name, None)
        if self.policy is not None:
            device = self.policy.device
            self.policy = None
            if device.type == "cuda":
                import torch

                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ inputs

    def _reject(self, topic: str, message: str) -> None:
        self.get_logger().error(f"rejected {topic}: {message}")
        self.status_pub.publish(conv.status_msg(topic, False, message, self.get_clock().now().nanoseconds))

    def _on_points(self, msg: PointCloud2) -> None:
        """Validate and keep only the newest cloud; wake the inference callback."""
        frames = list(self.params["frames"])
        if msg.header.frame_id not in frames:
            self._reject("points", f"cloud frame '{msg.header.frame_id}' is not one of {frames}; publish in one of them")
            return
        try:
            cloud = conv.msg_to_cloud(msg, max_points=self.params["max_points"])
        except CloudError as exc:
            self._reject("points", str(exc))
            return
        with self._lock:
            self._newest = cloud  # an unplanned older cloud is dropped here, by design
        self._guard.trigger()

    def _on_instruction(self, msg: String) -> None:
        try:
            text = check_text(msg.data, self.params["max_instruction_chars"])
        except ValueError as exc:
            self._reject("instruction", str(exc))
            return
        with self._lock:
            self._instruction = text
        self.get_logger().info(f"instruction: {text!r}")

    def _on_question(self, msg: String) -> None:
        """Answer from the newest cloud (runs in the inference group: one model call at a time)."""
        try:
            question = check_text(msg.data, self.params["max_instruction_chars"], "question")
            with self._lock:
                cloud = self._newest or getattr(self, "_last_cloud", None)
            if cloud is None:
                raise ValueError("no valid cloud has arrived on 'points' yet")
            answer = self.policy.answer(cloud, question)
        except (ValueError, NotImplementedError) as exc:
            self._reject("question", str(exc))
            return
        if self._active:
            self.answer_pub.publish(String(data=answer))

    def _on_result(self, msg: EpisodeResult) -> None:
        with self._plan_event:
            if self._goal is not None:
                self._goal.result = msg
                self._plan_event.notify_all()

    # ------------------------------------------------------------------ inference

    def _infer(self) -> None:
        """Plan for the newest cloud with the current instruction, and publish."""
        with self._lock:
            cloud, self._newest = self._newest, None
            instruction = self._goal.instruction if self._goal else self._instruction
        if cloud is None or instruction is None or not self._active or self.policy is None:
            if cloud is not None:
                with self._lock:
                    self._newest = self._newest or cloud  # keep it for when an instruction arrives
            return
        self._last_cloud = cloud
        t0 = time.perf_counter()
        seed = self.params["seed"]
        try:
            result = self.policy.plan(cloud, instruction, steps=self.params["sampling_steps"] or None,
                                      seed=None if seed < 0 else seed, refine=self.params["refine"])
        except ValueError as exc:
            self._reject("points", str(exc))
            return
        poses = result.poses
        if self.params["horizon"] > 0:
            poses = poses[: self.params["horizon"]]
        if self.params["steps_per_plan"] > 0:
            poses = poses[: self.params["steps_per_plan"]]
        ms = (time.perf_counter() - t0) * 1e3
        # The plan carries the cloud's stamp, so an executor can tell which observation it answers.
        plan = conv.plan_to_msg(poses, instruction, cloud.stamp_ns, ms, self.model_id, cloud.frame_id)
        self.plan_pub.publish(plan)
        self.poses_pub.publish(conv.plan_to_pose_array(poses, cloud.stamp_ns, cloud.frame_id))
        self.markers_pub.publish(conv.plan_to_markers(poses, cloud.stamp_ns, cloud.frame_id))
        with self._plan_event:
            self._last_plan = plan
            self._plan_event.notify_all()

    # ------------------------------------------------------------------ action

    def _on_goal(self, goal: ExecuteInstruction.Goal) -> GoalResponse:
        if not self._active:
            self.get_logger().error("rejected execute_instruction goal: the node is not active")
            return GoalResponse.REJECT
        try:
            check_text(goal.instruction, self.params["max_instruction_chars"])
        except ValueError as exc:
            self._reject("execute_instruction", str(exc))
            return GoalResponse.REJECT
        if self._goal is not None:
            self._reject("execute_instruction", "another ExecuteInstruction goal is running; cancel it first")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute(self, handle) -> ExecuteInstruction.Result:
        """Plan from each new cloud until the plan is empty, the step limit, an episode result, or cancel.

        The executor (e.g. the sim bridge) runs each published plan and publishes the next cloud,
        which is what makes the next plan; feedback reports every step handed over for execution.
        """
        request = handle.request
        goal = Goal(check_text(request.instruction, self.params["max_instruction_chars"]), int(request.max_steps) or 50)
        executed = PickPlacePlan(instruction=goal.instruction, model_id=self.model_id)
        with self._plan_event:
            self._goal, self._last_plan = goal, None
        self._guard.trigger()  # plan at once if a cloud is waiting
        message, success = "", False
        try:
            while rclpy.ok():
                with self._plan_event:
                    self._plan_event.wait_for(
                        lambda: self._last_plan is not None or goal.result is not None or handle.is_cancel_requested,
                        timeout=0.5,
                    )
                    plan, self._last_plan = self._last_plan, None
                if handle.is_cancel_requested:
                    handle.canceled()
                    return ExecuteInstruction.Result(success=False, message="cancelled", executed=executed)
                if goal.result is not None:
                    success, message = goal.result.success, f"episode ended: {goal.result.reason}"
                    break
                if plan is None:
                    continue
                if not plan.steps:
                    success, message = True, "plan empty: the policy judges the instruction done"
                    break
                for step in plan.steps:
                    handle.publish_feedback(ExecuteInstruction.Feedback(step_index=goal.steps_done, step=step))
                    executed.steps.append(step)
                    goal.steps_done += 1
                if goal.steps_done >= goal.max_steps:
                    message = f"step limit {goal.max_steps} reached"
                    break
        finally:
            with self._plan_event:
                self._goal = None
        handle.succeed()
        executed.header.stamp = self.get_clock().now().to_msg()
        return ExecuteInstruction.Result(success=success, message=message, executed=executed)


def _make_policy_node() -> PolicyNode:
    node = PolicyNode()
    if node.get_parameter("autostart").value:
        node.trigger_configure()
        if node.policy is not None:
            node.trigger_activate()
    return node


def main(args: list[str] | None = None) -> None:
    # Several threads: subscriptions keep running while a plan is being made.
    common.run(_make_policy_node, executor=lambda: MultiThreadedExecutor(num_threads=4), args=args)


if __name__ == "__main__":
    main()
