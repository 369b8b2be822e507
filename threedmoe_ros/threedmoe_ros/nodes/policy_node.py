"""Policy node: point cloud + instruction in, pick-and-place plan out.

A LifecycleNode in the style of yolo_ros: parameters are declared in __init__, the planner is made
on configure and freed on cleanup, publishers are lifecycle publishers that only publish while
active. It converts messages, validates them (threedmoe_ros.validation, the same input validator
the planner applies) and calls the Planner (threedmoe_ros.planner), which owns the model, its
device and dtype, cutting, refinement and the plan validator; the node holds no model logic.

Robustness: no exception leaves a callback. Bad input of any kind is refused with a log line and
an InputStatus (ok = false, the reason) on `status`; a plan that fails the plan validator (NaN,
outside the workspace, tilted, out of reach) is never published, and `status` says why. Every
`status_period_s` an ok status on `points` counts clouds received, planned, dropped (a newer one
arrived first) and refused. A configure that fails (checkpoint missing or corrupt, bad device or
dtype) leaves the node unconfigured with the reason on `status`; started with autostart (bringup,
launch) the process then exits with status 1, so the launcher ends with the error.

Threading: the points callback only decodes, validates and keeps the *newest* cloud (older ones
are dropped, never queued) and wakes the planning thread, a plain thread of the node's own that
plans, publishes and sleeps; so a slow plan never blocks the subscriptions and there is never more
than one cloud waiting. Clouds and plans stay off the node's MultiThreadedExecutor on purpose: it
rebuilds its wait set over every entity (lifecycle, parameter and action services, TF, ...) in
Python at each wake-up, under the GIL the plan needs. With a cloud callback and an inference
callback on it, its loop took half a core at 30 Hz and the plan's p99 was 270–460 ms; with the
points subscription on a helper node of its own (`<name>_points`, one thread, SingleThreadedExecutor)
and planning on its own thread, every cloud of a 30 Hz stream is planned, p99 42 ms. The executor
keeps the rest: instruction, questions, the action, episode results, timers.

Frames: plans are made and published in `world_frame`. A cloud in another frame (a camera's
`*_optical_frame`) is moved into it with TF before it is validated (nodes/frames.py: tf2_ros where
installed, else a listener of /tf_static and /tf); a frame TF cannot connect is refused, naming it.

Timings: with `timings_path` set, each published plan's stage times (decode, transform, validate,
wait, condition, head, check, publish; nodes/timings.py) are written there as JSON every
`status_period_s` and when the node closes (Ctrl-C), for the end-to-end latency benchmark.

Topics (relative names; remap as needed):
  in   points (sensor_msgs/PointCloud2; points_topic, QoS by points_qos; taken on the helper node <name>_points;
       objects by label field or segmentation: see grouping)
       instruction, question (std_msgs/String)
       /tf_static, /tf (tf2_msgs/TFMessage: where a cloud's frame is)
       episode_result (threedmoe_msgs/EpisodeResult; ends an ExecuteInstruction goal)
  out  pick_place_plan (threedmoe_msgs/PickPlacePlan, reliable + transient-local, depth 1)
       pick_place_poses (geometry_msgs/PoseArray)   pick_place_markers (visualization_msgs/MarkerArray)
       answer (std_msgs/String)   status (threedmoe_msgs/InputStatus: every refused input, with why)
  action  execute_instruction (threedmoe_msgs/action/ExecuteInstruction; see nodes/instruction_action.py)
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
import threading
import time


def _tune_malloc(arenas: int = 2, mmap_threshold: int = 1 << 20) -> None:
    """Make glibc malloc give multi-MB message buffers back to the OS once they are freed.

    At most `arenas` arenas (M_ARENA_MAX): each executor or DDS thread that handles a multi-MB
    message otherwise keeps its freed copy in an arena of its own. A fixed mmap threshold
    (M_MMAP_THRESHOLD): blocks of `mmap_threshold` bytes or more are mapped on their own and
    unmapped when freed. Left dynamic, glibc raises the threshold to the size of the first big block
    freed (a 24 MB cloud), so every later one is carved from an arena that stays resident: the
    first flood of huge (even refused) clouds and strings grew the node by ~60 MB. The simulator's
    clouds (~0.6 MB) stay below the threshold; mapping a camera's multi-MB cloud costs microseconds
    beside a plan's milliseconds. glibc fixes the arena limit when a second thread first allocates,
    so this runs before rclpy and torch are imported (they start threads)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # -8 = M_ARENA_MAX
        libc.mallopt(-3, mmap_threshold)  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its allocator has its own policy
        pass


_tune_malloc()


def _trim_memory() -> None:
    """Hand freed heap pages back to the OS (glibc malloc_trim), after a multi-MB message was let go."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String
from threedmoe_msgs.msg import EpisodeResult, InputStatus, PickPlacePlan
from visualization_msgs.msg import MarkerArray

from threedmoe_ros.nodes import common, frames
from threedmoe_ros.nodes import conversions as conv
from threedmoe_ros.nodes.common import LATCHED, doc
from threedmoe_ros.nodes.timings import StageTimings, Stopwatch
from threedmoe_ros.types import Cloud
from threedmoe_ros.validation import MAX_INSTRUCTION_CHARS, MAX_POINTS, CloudLimits, InputError, validate_cloud, \
    validate_text

# Depth 1: only the newest cloud matters; DDS itself must not queue older ones either.
POINTS_QOS = {
    "sensor_data": QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE),
    "reliable": QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE),
}
MAX_REASON_CHARS = 1000
BIG_INPUT_BYTES = 4 << 20  # messages this large are followed by a heap trim


class ConfigureError(RuntimeError):
    """configure cannot complete; the message says why and what to change."""


def guarded(topic: str):
    """Run a callback so that nothing escapes it: InputError becomes a refusal on `topic`, anything
    else an 'internal error' refusal with its type, logged (an escaping exception would end the executor)."""

    def wrap(callback):
        @functools.wraps(callback)
        def run(self, *args):
            if self._closing:
                return None
            try:
                return callback(self, *args)
            except Exception as exc:  # noqa: BLE001 - the process must outlive any input
                if self._closing:  # shutting down: handles vanish under running callbacks; not an input problem
                    return None
                reason = str(exc) if isinstance(exc, InputError) else \
                    f"internal error while handling it: {type(exc).__name__}: {exc}"
                try:
                    self._reject(topic, reason)
                except Exception:  # noqa: BLE001 - not even the status could be sent; the log line is all there is
                    self.get_logger().error(f"rejected {topic}: {reason}")
            return None

        return run

    return wrap


class PolicyNode(LifecycleNode):
    def __init__(self, name: str = "policy", **kwargs):
        super().__init__(name, **kwargs)
        self.declare_parameter("checkpoint", "", doc("policy checkpoint directory, or a shipped policy by name: default (empty), light"))
        self.declare_parameter("device", "cpu", doc("torch device: cpu, cuda, cuda:1 ..."))
        self.declare_parameter("dtype", "float32", doc(
            "float32, bfloat16 or float16: the Pose-DiT head's arithmetic (encoders and decoding stay float32); "
            "refused at configure where the device cannot run it"))
        self.declare_parameter("torch_threads", 1, doc(
            "CPU threads for torch (0 = torch's default); one is fastest for a small head beside ROS's own threads"))
        self.declare_parameter("optimize", True, doc("plan with a TorchScript-frozen copy of the head (float32 only; same plans, ~1.5x faster)"))
        self.declare_parameter("sampling_steps", 0, doc(
            "sampling steps per plan: Euler steps of rectified flow, denoising steps of DDPM "
            "(0 = the checkpoint's own: 1 for the shipped policies, as good as 4 in closed loop)"))
        self.declare_parameter("refine", False, doc("snap plan positions onto the objects of a labelled cloud (models/refine.py)"))
        self.declare_parameter("horizon", 0, doc("most steps a published plan holds (0 = the model's horizon)"))
        self.declare_parameter("steps_per_plan", 0, doc("steps of each plan to publish for execution before re-planning (0 = all)"))
        self.declare_parameter("seed", -1, doc("sampling seed per plan (-1 = the policy's own generator)"))
        self.declare_parameter("points_qos", "reliable", doc(
            "QoS of the points subscription: reliable (the default: a large cloud sent best effort is often lost "
            "whole on a busy machine) or sensor_data (best effort: needed when the driver publishes best effort)"))
        self.declare_parameter("points_topic", "points", doc(
            "topic of the clouds; resolved with this node's namespace and remaps (-r points:=..., also "
            "-r <node>:points:=...), then taken by the helper node <name>_points"))
        self.declare_parameter("grouping", "auto", doc(
            "how a cloud's objects are found: auto (instance labels when the cloud has a label field, as from the "
            "simulator or an upstream segmentation node; else segmentation), labels (clouds without are refused), "
            "segment (labels are ignored)"))
        self.declare_parameter("world_frame", "world", doc(
            "frame plans are made and published in; a cloud in another frame is moved into it with TF "
            "(/tf_static, /tf), and refused when TF has no path from its frame to this one"))
        self.declare_parameter("max_points", MAX_POINTS, doc("clouds with more points are refused"))
        self.declare_parameter("sanity_margin", CloudLimits.sanity_margin, doc(
            "points farther than this (m) outside the workspace, and NaN/inf points, are dropped"))
        self.declare_parameter("max_instruction_chars", MAX_INSTRUCTION_CHARS, doc("longer instructions/questions are refused"))
        self.declare_parameter("model_id", "", doc("name written into each plan (default: the checkpoint's directory name)"))
        self.declare_parameter("status_period_s", 5.0, doc("period of the ok status counting clouds on `status` (0 = off)"))
        self.declare_parameter("timings_path", "", doc(
            "write each published plan's stage times (ms) as JSON here every status period and on exit (empty = off)"))
        self.declare_parameter("result_wait_s", 10.0, doc(
            "after an empty plan, how long an ExecuteInstruction goal waits for the executor's episode_result"))
        self.declare_parameter("autostart", True, doc(
            "configure and activate on start (no lifecycle manager needed); if that fails the process exits with status 1"))
        self.planner = None
        self._closing = False  # set by close(): callbacks still running then end silently
        self._big_input = False  # a multi-MB message came in: trim the heap once it is freed
        self._inferring = threading.Lock()  # held while the model is used: a plan, or an answer
        self._wakeup = threading.Condition()  # the planning thread sleeps on it
        self._pending = False  # set by _wake, cleared by the planning thread
        self._planning: threading.Thread | None = None
        self.fatal: str | None = None  # why an autostart failed: main() exits non-zero with it
        self.action = None
        self._lock = threading.Lock()
        self._newest: tuple[Cloud, Stopwatch] | None = None  # the cloud to plan on next, and its laps so far
        self._last_cloud: Cloud | None = None
        self._instruction: str | None = None
        self._active = False
        self._created: list = []
        self._timer = None
        self.tf = None
        self.timings: StageTimings | None = None
        self._counts = dict(received=0, planned=0, dropped=0, refused=0)
        self._last_log: dict[str, tuple[str, float]] = {}
        # Status is a plain publisher: bad input (and a failed configure) is reported even while inactive.
        self.status_pub = self.create_publisher(InputStatus, "status", 50)

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, load the model onto its device, create publishers and subscriptions."""
        p = self.params = {name: param.value for name, param in self.get_parameters_by_prefix("").items()}
        try:
            if p["points_qos"] not in POINTS_QOS:
                raise ConfigureError(f"points_qos {p['points_qos']!r} is not one of {sorted(POINTS_QOS)}")
            try:  # by this node's namespace and remaps, so `-r policy:points:=...` reaches the helper node too
                self.points_topic = self.resolve_topic_name(p["points_topic"])
            except Exception as exc:  # noqa: BLE001 - rclpy raises its own types for an invalid name
                raise ConfigureError(f"points_topic {p['points_topic']!r} is not a valid topic name: {exc}") from None
            if not p["world_frame"]:
                raise ConfigureError("world_frame is empty; name the frame plans are made in (e.g. 'world')")
            try:
                # After TF, every cloud is in the world frame: the validator holds that.
                self.limits = CloudLimits(max_points=int(p["max_points"]), sanity_margin=float(p["sanity_margin"]),
                                          frames=(p["world_frame"],))
            except (TypeError, ValueError) as exc:
                raise ConfigureError(f"cloud limits: {exc}") from None
            try:
                self.timings = StageTimings(p["timings_path"]) if p["timings_path"] else None
            except OSError as exc:
                raise ConfigureError(f"timings_path {p['timings_path']!r}: {exc}") from None
            path = self._checkpoint_path(p["checkpoint"])
            self.planner = self._load(path, p)
        except Exception as exc:  # noqa: BLE001 - any failure is a configure failure, reported with its reason
            reason = str(exc) if isinstance(exc, ConfigureError) else f"{type(exc).__name__}: {exc}"
            self.planner = None
            self.get_logger().error(f"configure failed: {reason}")
            self.status_pub.publish(conv.status_msg("configure", False, reason, self.get_clock().now().nanoseconds))
            self._configure_error = reason
            return TransitionCallbackReturn.FAILURE
        self.model_id = p["model_id"] or path.rstrip("/").split("/")[-1]
        self.checkpoint = path

        io_group = ReentrantCallbackGroup()
        self.plan_pub = self.create_lifecycle_publisher(PickPlacePlan, "pick_place_plan", LATCHED)
        self.poses_pub = self.create_lifecycle_publisher(PoseArray, "pick_place_poses", 10)
        self.markers_pub = self.create_lifecycle_publisher(MarkerArray, "pick_place_markers", 10)
        self.answer_pub = self.create_lifecycle_publisher(String, "answer", 10)
        self.tf = frames.tf_listener(self, callback_group=io_group)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self._start_points(p, events)
        self._created = [
            # raw: rclpy's own decoding cuts a string at a NUL and hides invalid UTF-8 (conversions.text_from_cdr).
            self.create_subscription(String, "instruction", self._on_instruction, LATCHED, callback_group=io_group, raw=True),
            self.create_subscription(String, "question", self._on_question, 10, callback_group=MutuallyExclusiveCallbackGroup(),
                                     raw=True),
            self.create_subscription(EpisodeResult, "episode_result", self._on_result, 10, callback_group=io_group),
        ]
        from threedmoe_ros.nodes.instruction_action import InstructionAction

        self.action = InstructionAction(self, self._check_text, self._wake, self._reject, self.model_id,
                                        float(p["result_wait_s"]))
        if p["status_period_s"] > 0:
            self._timer = self.create_timer(float(p["status_period_s"]), self._report_counts, callback_group=io_group)
        self._trim_timer = self.create_timer(1.0, self._trim_after_big_input, callback_group=io_group)
        self._stop_planning = False
        self._planning = threading.Thread(target=self._planning_loop, name="planning", daemon=True)
        self._planning.start()
        return TransitionCallbackReturn.SUCCESS

    @staticmethod
    def _checkpoint_path(name_or_path: str) -> str:
        from threedmoe_ros.checkpoints import policy_path

        return policy_path(name_or_path)

    def _load(self, path: str, p: dict):
        """The planner on its device in its dtype, warmed up; ConfigureError (or CheckpointError) naming the problem."""
        import torch

        from threedmoe_ros.planner import Planner

        if p["torch_threads"] > 0:
            torch.set_num_threads(p["torch_threads"])
        # Both parameters cut the plan; the planner validates what is left, which is what is published.
        horizon = min((n for n in (p["horizon"], p["steps_per_plan"]) if n > 0), default=None)
        try:
            planner = Planner.from_pretrained(path, device=p["device"], dtype=p["dtype"], frozen=p["optimize"],
                                              refine=p["refine"], horizon=horizon, grouping=p["grouping"])
            # Resolved once (0 = the checkpoint's own): a step count the checkpoint's scheduler cannot run
            # (DDPM runs all its steps) fails here, not as a refusal of every cloud.
            self.steps = planner.policy.scheduler.inference_steps(p["sampling_steps"])
            planner.warm_up()
        except ValueError as exc:  # names the device, dtype or step count and what to use instead
            raise ConfigureError(str(exc)) from None
        # Everything alive now (torch, rclpy, the model) lives as long as the planner: move it out of the
        # cyclic collector's reach. Otherwise every full collection walks it, holding the GIL: measured on
        # a 30 Hz stream, 10 full collections in 40 s of 72–95 ms each; after the freeze none over 20 ms.
        gc.collect()
        gc.freeze()
        return planner

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        done = super().on_activate(state)
        p, policy = self.params, self.planner.policy
        own = "" if p["sampling_steps"] else " (the checkpoint's)"
        self.get_logger().info(
            f"policy ready: checkpoint {self.checkpoint}, encoder {policy.config.encoder}, {policy.config.scheduler} "
            f"with {self.steps} steps{own}, "
            f"device {p['device']} {p['dtype']}, points on {self.points_topic} ({p['points_qos']}), "
            f"objects by {p['grouping']} grouping, world frame '{p['world_frame']}'"
            + (f", timings to {p['timings_path']}" if p["timings_path"] else ""))
        return done

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

    def close(self) -> None:
        """Before the node is destroyed (Ctrl-C): stop taking input and let a plan being made finish."""
        self._closing, self._active = True, False
        self._stop_points()
        self._end_planning()
        self._write_timings()

    def _start_points(self, p: dict, events) -> None:
        """The points subscription on an executor of its own: a helper node with nothing else on it (no
        parameter services), spun by one thread. On the node's MultiThreadedExecutor every cloud woke a
        wait-set rebuild over ~25 entities in Python: its loop took half a core at 30 Hz, under the GIL
        the plan needs. The topic is resolved by this node, so its own remaps (`-r policy:points:=...`)
        reach the helper as well as those given for all nodes."""
        import rclpy

        # Its own name even where a launcher renamed every node of the process (a global `__node` remap).
        name = f"{self.get_name()}_points"
        self._points_node = rclpy.create_node(name, namespace=self.get_namespace(), context=self.context,
                                              cli_args=["--ros-args", "-r", f"__node:={name}"],
                                              start_parameter_services=False)
        self._points_node.create_subscription(PointCloud2, self.points_topic, self._on_points, POINTS_QOS[p["points_qos"]],
                                              event_callbacks=events)
        self._points_executor = SingleThreadedExecutor(context=self.context)
        self._points_executor.add_node(self._points_node)
        self._points_spinning = True
        self._points_thread = threading.Thread(target=self._spin_points, name="points", daemon=True)
        self._points_thread.start()

    def _spin_points(self) -> None:
        while self._points_spinning and self.context.ok():
            try:
                self._points_executor.spin_once(timeout_sec=0.1)
            except Exception:  # noqa: BLE001 - shutting down: the context went away under the wait
                if self._points_spinning and self.context.ok():
                    raise
                return

    def _stop_points(self) -> None:
        if getattr(self, "_points_node", None) is None:
            return
        self._points_spinning = False
        if self._points_thread is not threading.current_thread():
            self._points_thread.join(timeout=5.0)
        self._points_executor.shutdown(timeout_sec=1.0)
        self._points_node.destroy_node()
        self._points_node = None

    def _release(self) -> None:
        self._active = False
        self._stop_points()
        self._end_planning()
        for sub in self._created:
            self.destroy_subscription(sub)
        self._created = []
        if self.tf is not None:
            self.tf.destroy()
            self.tf = None
        for name in ("_timer", "_trim_timer"):
            if getattr(self, name, None) is not None:
                self.destroy_timer(getattr(self, name))
                setattr(self, name, None)
        if self.action is not None:
            self.action.destroy()
            self.action = None
        for name in ("plan_pub", "poses_pub", "markers_pub", "answer_pub"):
            if getattr(self, name, None) is not None:
                self.destroy_lifecycle_publisher(getattr(self, name))
                setattr(self, name, None)
        if self.planner is not None:
            device = self.planner.device
            self.planner = None
            gc.unfreeze()  # the old model's objects become collectable again
            if device.type == "cuda":
                import torch

                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ inputs

    def _reject(self, topic: str, message: str) -> None:
        """Refused input: always an InputStatus; a log line unless the same reason was logged in the last second."""
        if len(message) > MAX_REASON_CHARS:  # a reason may quote input (a frame_id, field names): never all of it
            message = message[:MAX_REASON_CHARS] + " …"
        now = time.monotonic()
        last = self._last_log.get(topic)
        if last is None or last[0] != message or now - last[1] > 1.0:
            self.get_logger().error(f"rejected {topic}: {message}")
            self._last_log[topic] = (message, now)
        if topic == "points":
            self._count("refused")
        if self.action is not None:
            self.action.on_rejected(f"{topic}: {message}")
        self.status_pub.publish(conv.status_msg(topic, False, message, self.get_clock().now().nanoseconds))

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    def _check_text(self, text: str, what: str = "instruction") -> str:
        return validate_text(text, self.params["max_instruction_chars"], what)

    @guarded("points")
    def _on_points(self, msg: PointCloud2) -> None:
        """Decode, move into the world frame, validate and keep only the newest cloud; wake the planning thread."""
        watch = Stopwatch()
        self._count("received")
        self._big_input |= len(msg.data) >= BIG_INPUT_BYTES
        cloud = conv.msg_to_cloud(msg, max_points=self.limits.max_points)
        watch.lap("decode")
        cloud = self._to_world(cloud)
        watch.lap("transform")
        cloud = validate_cloud(cloud, self.limits)
        watch.lap("validate")
        with self._lock:
            if self._newest is not None:
                self._counts["dropped"] += 1  # an unplanned older cloud is dropped here, by design
            self._newest = (cloud, watch)
        self._wake()

    def _to_world(self, cloud: Cloud) -> Cloud:
        """The cloud in the world frame (InputError when TF has no path there); a cloud with an empty
        frame_id is left for the validator to refuse."""
        world = self.params["world_frame"]
        if cloud.frame_id in (world, ""):
            return cloud
        return frames.transform_cloud(cloud, self.tf.lookup(world, cloud.frame_id), world)

    @guarded("points")
    def _on_incompatible_qos(self, info) -> None:
        other = "sensor_data" if self.params["points_qos"] == "reliable" else "reliable"
        self._reject("points", f"a publisher of 'points' offers QoS this subscription (points_qos: "
                               f"{self.params['points_qos']}) cannot receive ({info.last_policy_kind}); publish "
                               f"{self.params['points_qos'].replace('_', ' ')} or set points_qos:={other}")

    @guarded("instruction")
    def _on_instruction(self, raw: bytes) -> None:
        self._big_input |= len(raw) >= BIG_INPUT_BYTES
        text = self._check_text(conv.text_from_cdr(raw))
        with self._lock:
            self._instruction = text
        self.get_logger().info(f"instruction: {text!r}")
        self._wake()  # a cloud kept while there was no instruction is planned now

    @guarded("question")
    def _on_question(self, raw: bytes) -> None:
        """Answer from the newest cloud (one model call at a time: it waits for a plan being made)."""
        question = self._check_text(conv.text_from_cdr(raw, "question"), "question")
        with self._lock:
            cloud = self._newest[0] if self._newest is not None else self._last_cloud
        if cloud is None:
            raise InputError("no valid cloud has arrived on 'points' yet")
        if self.planner is None or not self._active:
            raise InputError("the node is not active")
        try:
            with self._inferring:
                answer = self.planner.answer(cloud, question)
        except NotImplementedError as exc:
            raise InputError(str(exc)) from None
        self.answer_pub.publish(String(data=answer))

    @guarded("episode_result")
    def _on_result(self, msg: EpisodeResult) -> None:
        if self.action is not None:
            self.action.on_result(msg)

    def _trim_after_big_input(self) -> None:
        if self._big_input:
            self._big_input = False
            _trim_memory()

    @guarded("points")
    def _report_counts(self) -> None:
        """Every period, also when nothing changed: the operator sees the node is alive and what it did."""
        with self._lock:
            counts = dict(self._counts)
        self.status_pub.publish(conv.status_msg("points", True, (
            f"clouds received {counts['received']}, planned {counts['planned']}, dropped {counts['dropped']} "
            f"(a newer cloud arrived first), refused {counts['refused']}"), self.get_clock().now().nanoseconds))
        self._write_timings()

    def _write_timings(self) -> None:
        """Stage timings to timings_path, if set; a failed write is logged, never a refusal of input."""
        if self.timings is None:
            return
        try:
            self.timings.write()
        except OSError as exc:
            self.get_logger().error(f"cannot write timings to {self.timings.path}: {exc}")

    # ------------------------------------------------------------------ inference

    def _wake(self) -> None:
        """Tell the planning thread there is something to plan (a cloud, an instruction, a goal)."""
        with self._wakeup:
            self._pending = True
            self._wakeup.notify()

    def _planning_loop(self) -> None:
        while True:
            with self._wakeup:
                self._wakeup.wait_for(lambda: self._pending or self._stop_planning)
                if self._stop_planning:
                    return
                self._pending = False
            self._infer()

    def _end_planning(self) -> None:
        """Stop the planning thread, letting a plan being made finish (at most 10 s)."""
        thread = getattr(self, "_planning", None)
        if thread is None:
            return
        with self._wakeup:
            self._stop_planning = True
            self._wakeup.notify()
        if thread is not threading.current_thread():
            thread.join(timeout=10.0)
        self._planning = None

    @guarded("points")
    def _infer(self) -> None:
        """Plan for the newest cloud with the current instruction; publish only a plan that passes the plan validator."""
        with self._inferring:
            self._plan_newest()

    def _plan_newest(self) -> None:
        action = self.action
        goal_instruction = action.instruction if action is not None else None
        with self._lock:
            kept, self._newest = self._newest, None
            instruction = goal_instruction or self._instruction
            if kept is not None and (instruction is None or not self._active or self.planner is None):
                self._newest = self._newest or kept  # keep it for when an instruction arrives
                return
        if kept is None:
            return
        cloud, watch = kept
        watch.lap("wait")
        self._last_cloud = cloud
        seed = self.params["seed"]
        result = self.planner.plan(cloud, instruction, steps=self.steps, cloud_checked=True,
                                   seed=None if seed < 0 else seed)
        watch.lap("plan")  # the planner splits this itself: result.encoder_ms, head_ms, total_ms
        poses = result.poses
        if result.problem:
            self._reject("pick_place_plan", f"the plan for the cloud stamped {cloud.stamp_ns} ns is not published: {result.problem}")
            return
        # The plan carries the cloud's stamp, so an executor can tell which observation it answers;
        # its frame is the world frame the cloud was moved into.
        plan = conv.plan_to_msg(poses, instruction, cloud.stamp_ns, result.total_ms, self.model_id, cloud.frame_id)
        self.plan_pub.publish(plan)
        self.poses_pub.publish(conv.plan_to_pose_array(poses, cloud.stamp_ns, cloud.frame_id))
        self.markers_pub.publish(conv.plan_to_markers(poses, cloud.stamp_ns, cloud.frame_id, instruction))
        watch.lap("publish")
        if self.timings is not None:
            self.timings.add(cloud.stamp_ns, watch, result.encoder_ms, result.head_ms, result.total_ms)
        self._count("planned")
        if goal_instruction is not None and action is not None:
            action.on_plan(plan)


def _make_policy_node() -> PolicyNode:
    node = PolicyNode()
    if node.get_parameter("autostart").value:
        node.trigger_configure()
        if node.planner is None:
            node.fatal = getattr(node, "_configure_error", "configure failed")
        else:
            node.trigger_activate()
    return node


def main(args: list[str] | None = None) -> None:
    made: list[PolicyNode] = []

    def make() -> PolicyNode:
        made.append(_make_policy_node())
        return made[-1]

    # Several threads: an ExecuteInstruction goal waits in its callback while clouds, results and cancels come in.
    common.run(make, done=lambda node: node.fatal is not None, executor=lambda: MultiThreadedExecutor(num_threads=4),
               on_exit=lambda node: node.close(), args=args,
               node_class=PolicyNode)
    if made and made[-1].fatal is not None:
        print(f"policy_node: cannot start: {made[-1].fatal}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
