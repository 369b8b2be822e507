"""The policy node's ExecuteInstruction action: goals are validated, cancel is honoured, and in the
closed loop with the sim bridge (mode: action) every executed step comes back as feedback."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.ros


def action_client(context):
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor
    from threedmoe_msgs.action import ExecuteInstruction

    node = rclpy.create_node("action_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return node, executor, ActionClient(node, ExecuteInstruction, "execute_instruction")


def wait(executor, future, timeout):
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    assert future.done(), "timed out"
    return future.result()


def test_goal_validation_and_cancel(rclpy_context, start_node, untrained_checkpoint):
    from action_msgs.msg import GoalStatus
    from threedmoe_msgs.action import ExecuteInstruction

    policy = start_node("policy_node", {"checkpoint": str(untrained_checkpoint)}, "policy")
    node, executor, client = action_client(rclpy_context)
    try:
        assert client.wait_for_server(timeout_sec=60), policy.log
        bad = wait(executor, client.send_goal_async(ExecuteInstruction.Goal(instruction="")), 30)
        assert not bad.accepted
        # No cloud ever arrives, so the goal waits for one until it is cancelled.
        handle = wait(executor, client.send_goal_async(ExecuteInstruction.Goal(instruction="stack the blocks")), 30)
        assert handle.accepted
        result_future = handle.get_result_async()
        wait(executor, handle.cancel_goal_async(), 30)
        result = wait(executor, result_future, 30)
        assert result.status == GoalStatus.STATUS_CANCELED
        assert result.result.message == "cancelled"
        assert policy.alive()
    finally:
        node.destroy_node()


def test_sim_bridge_drives_episodes_through_the_action(rclpy_context, start_node):
    from rosio import RosIO

    from threedmoe_ros.checkpoints import DEFAULT_POLICY

    policy = start_node("policy_node", {"checkpoint": str(DEFAULT_POLICY), "seed": 0}, "policy")
    io = RosIO(rclpy_context)
    bridge = start_node("sim_bridge_node", {
        "mode": "action", "tasks": ["put-block-in-zone"], "colors": ["seen"], "episodes": 1, "plan_timeout_s": 120.0,
        "wait_for_subscribers": ["points", "episode_result"],
    }, "sim_bridge")
    try:
        assert io.spin_until(lambda: io.results, 300), f"{bridge.log}\n{policy.log}"
        result = io.results[0]
        assert result.task == "put-block-in-zone" and result.reason != "aborted", result
        assert result.steps_taken > 0, f"{bridge.log}\n{policy.log}"
        assert bridge.wait(timeout=60) == 0
    finally:
        io.close()
