"""The policy node's ExecuteInstruction action: one goal at a time, planned in the closed loop.

While a goal runs its instruction is the one planned for. Every plan the node publishes is handed
over as feedback, step by step; an executor (the sim bridge, a robot driver) runs it and sends the
next cloud, which makes the next plan. A goal ends when

- an `episode_result` arrives (success is the executor's own check),
- the policy publishes an empty plan (it judges the instruction done): success is then the
  executor's verdict if one publishes `episode_result` (it is waited for), else the policy's own,
- the step limit is reached (success False), or the client cancels.

An empty plan is only ever made for a cloud that passed the input validator, which refuses clouds
with no object in them, so a goal never ends in success because its input had nothing in it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from threedmoe_msgs.action import ExecuteInstruction
from threedmoe_msgs.msg import EpisodeResult, PickPlacePlan

from threedmoe_ros.validation import InputError

DEFAULT_MAX_STEPS = 50


@dataclass
class Goal:
    """The goal being served: its instruction, its step budget, and what has happened so far."""

    instruction: str
    max_steps: int
    steps_done: int = 0
    plans: list[PickPlacePlan] = field(default_factory=list)  # published, not yet handed over
    result: EpisodeResult | None = None
    last_rejection: str = ""  # why the newest input for it was refused (reported if it ends without a plan)


class InstructionAction:
    """ExecuteInstruction on `node`. `check` validates an instruction (InputError), `wake` asks for a plan
    now, `reject` reports a refused goal (log + status); the node calls `on_plan`, `on_result` and `on_rejected`."""

    def __init__(self, node, check: Callable[[str], str], wake: Callable[[], None], reject: Callable[[str, str], None],
                 model_id: str, result_wait_s: float = 10.0):
        self.node, self.check, self.wake, self.reject = node, check, wake, reject
        self.model_id, self.result_wait_s = model_id, result_wait_s
        self._cv = threading.Condition()
        self._goal: Goal | None = None
        self._busy = False  # set when a goal is accepted, before its execute callback starts
        self.server = ActionServer(
            node, ExecuteInstruction, "execute_instruction", self._execute,
            goal_callback=self._on_goal, cancel_callback=self._on_cancel, callback_group=ReentrantCallbackGroup(),
        )

    # ------------------------------------------------------------------ what the node calls

    @property
    def instruction(self) -> str | None:
        """The running goal's instruction (it overrides the `instruction` topic), or None."""
        with self._cv:
            return self._goal.instruction if self._goal is not None else None

    def on_plan(self, plan: PickPlacePlan) -> None:
        with self._cv:
            if self._goal is not None:
                self._goal.plans.append(plan)
                self._cv.notify_all()

    def on_result(self, msg: EpisodeResult) -> None:
        with self._cv:
            if self._goal is not None:
                self._goal.result = msg
                self._cv.notify_all()

    def on_rejected(self, reason: str) -> None:
        with self._cv:
            if self._goal is not None:
                self._goal.last_rejection = reason

    def destroy(self) -> None:
        with self._cv:
            self._cv.notify_all()
        self.server.destroy()

    # ------------------------------------------------------------------ action callbacks

    def _on_goal(self, request: ExecuteInstruction.Goal) -> GoalResponse:
        try:
            self.check(request.instruction)
        except InputError as exc:
            self.reject("execute_instruction", str(exc))
            return GoalResponse.REJECT
        with self._cv:
            if self._busy:
                busy = True
            else:
                busy, self._busy = False, True
        if busy:
            self.reject("execute_instruction", "another ExecuteInstruction goal is running; cancel it first")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_cancel(self, _handle) -> CancelResponse:
        with self._cv:
            self._cv.notify_all()
        return CancelResponse.ACCEPT

    def _execute(self, handle) -> ExecuteInstruction.Result:
        executed = PickPlacePlan(model_id=self.model_id)
        try:
            goal = Goal(self.check(handle.request.instruction), int(handle.request.max_steps) or DEFAULT_MAX_STEPS)
            executed.instruction = goal.instruction
            with self._cv:
                self._goal = goal
            self.wake()  # plan at once if a cloud is waiting
            success, message = self._serve(handle, goal, executed)
        except InputError as exc:  # cannot happen after _on_goal accepted it; never leave the callback with it
            success, message = False, str(exc)
        except Exception as exc:  # noqa: BLE001 - a goal ends with a reason, never with a traceback
            self.node.get_logger().error(f"execute_instruction goal failed: {type(exc).__name__}: {exc}")
            success, message = False, f"internal error: {type(exc).__name__}: {exc}"
        finally:
            with self._cv:
                self._goal, self._busy = None, False
        executed.header.stamp = self.node.get_clock().now().to_msg()
        result = ExecuteInstruction.Result(success=success, message=message, executed=executed)
        if message == "cancelled":
            handle.canceled()
        elif handle.is_active:
            handle.succeed()
        return result

    def _serve(self, handle, goal: Goal, executed: PickPlacePlan) -> tuple[bool, str]:
        while rclpy.ok():
            with self._cv:
                self._cv.wait_for(lambda: goal.plans or goal.result is not None or handle.is_cancel_requested, timeout=0.5)
                plans, goal.plans = goal.plans, []
            if handle.is_cancel_requested:
                return False, "cancelled"
            if goal.result is not None:
                return bool(goal.result.success), f"episode ended: {goal.result.reason}"
            for plan in plans:
                if not plan.steps:
                    return self._done(handle, goal)
                for step in plan.steps:
                    handle.publish_feedback(ExecuteInstruction.Feedback(step_index=goal.steps_done, step=step))
                    executed.steps.append(step)
                    goal.steps_done += 1
                if goal.steps_done >= goal.max_steps:
                    return False, f"step limit {goal.max_steps} reached"
        return False, "shut down" + (f" (last input refused: {goal.last_rejection})" if goal.last_rejection else "")

    def _done(self, handle, goal: Goal) -> tuple[bool, str]:
        """An empty plan: the policy judges the instruction done. An executor that scores episodes decides."""
        judged = "plan empty: the policy judges the instruction done"
        if self.node.count_publishers("episode_result") == 0:
            return True, f"{judged} (no executor publishes episode_result to confirm it)"
        deadline = time.monotonic() + self.result_wait_s
        with self._cv:
            while goal.result is None and not handle.is_cancel_requested and time.monotonic() < deadline and rclpy.ok():
                self._cv.wait(timeout=0.2)
        if handle.is_cancel_requested:
            return False, "cancelled"
        if goal.result is None:
            return False, f"{judged}, but no episode_result confirmed it within {self.result_wait_s:.0f} s"
        return bool(goal.result.success), f"{judged}; episode ended: {goal.result.reason}"
