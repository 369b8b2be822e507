"""The robot: a UR5-like arm that follows a suction tool.

Speed decides the design. The suction tool is a light free body pulled along its path by a fixed
constraint (the physics engine resolves its contacts with blocks), so a physics step costs what a
floating gripper costs. The arm lives in a kinematics-only pybullet client of its own: at 30 Hz of
simulated time its joints are set by inverse kinematics to the tool's pose, which gives
`joint_states` a real arm's values and tells poses a UR5 cannot reach from those it can. Kept out
of the physics world it costs no physics (a step is ~40 % cheaper) and no rendering, and the
cameras see the table as they would with the arm parked out of view.
"""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from threedmoe_ros.sim import assets

JOINT_STATE_HZ = 30.0


class Arm:
    """The UR5-like arm in its own kinematics-only client (created once per environment)."""

    def __init__(self, base=(0.0, 0.0, 0.0)):
        self.client = p.connect(p.DIRECT)
        self.body = p.loadURDF(assets.ur5_urdf_path(), base, useFixedBase=True, physicsClientId=self.client)
        self.joint_names = list(assets.UR5_JOINTS)
        self.tip_link = p.getNumJoints(self.body, physicsClientId=self.client) - 1
        self.go_home()
        self.home_position, _ = self.tip_pose()

    def close(self) -> None:
        if p.isConnected(self.client):
            p.disconnect(self.client)

    def go_home(self) -> None:
        self.set_joints(assets.UR5_HOME)

    def joint_positions(self) -> np.ndarray:
        states = p.getJointStates(self.body, range(len(self.joint_names)), physicsClientId=self.client)
        return np.array([s[0] for s in states])

    def set_joints(self, q) -> None:
        for i, value in enumerate(q):
            p.resetJointState(self.body, i, float(value), physicsClientId=self.client)

    def solve_ik(self, position, orientation, rounds: int = 3) -> np.ndarray:
        """Move the arm to the IK solution for the tip pose, warm-started from where it is."""
        # One round of pybullet's damped least squares stops short near the edge of the reach;
        # three converge to < 2 mm wherever a UR5 can go.
        q = None
        for _ in range(rounds):
            q = p.calculateInverseKinematics(
                self.body, self.tip_link, list(position), list(orientation),
                maxNumIterations=100, residualThreshold=1e-5, physicsClientId=self.client,
            )
            self.set_joints(q[: len(self.joint_names)])
        return np.array(q[: len(self.joint_names)])

    def tip_pose(self) -> tuple[np.ndarray, np.ndarray]:
        state = p.getLinkState(self.body, self.tip_link, computeForwardKinematics=True, physicsClientId=self.client)
        return np.array(state[4]), np.array(state[5])

    def reach_error(self, position, orientation) -> tuple[float, float]:
        """(position error m, orientation error rad) of the best IK solution; the arm is left as it was."""
        saved = self.joint_positions()
        self.go_home()
        self.solve_ik(position, orientation)
        tip, quat = self.tip_pose()
        self.set_joints(saved)
        diff = p.getDifferenceQuaternion(list(quat), list(orientation))
        return float(np.linalg.norm(tip - np.asarray(position))), 2.0 * math.acos(min(1.0, abs(diff[3])))


class Robot:
    """Suction tool in the physics client, with the arm following it. Holds the simulated clock (seconds)."""

    def __init__(self, client: int, timestep: float, arm: Arm):
        self.client = client
        self.timestep = timestep
        self.time = 0.0
        self.arm = arm
        self.arm.go_home()
        self.joint_names = arm.joint_names
        self.home_position = arm.home_position.copy()
        self.home_orientation = np.array([0.0, 0.0, 0.0, 1.0])
        self.tool = assets.make_tool(client, self.home_position)
        self._drive = p.createConstraint(
            self.tool, -1, -1, -1, p.JOINT_FIXED, [0, 0, 0], [0, 0, 0], self.home_position, physicsClientId=client
        )
        self.max_force = 100.0
        self.held: int | None = None
        self._suction: int | None = None
        self.joint_log: list[tuple[float, np.ndarray]] = [(0.0, self.joint_positions())]
        self._next_joint_time = 1.0 / JOINT_STATE_HZ

    # ------------------------------------------------------------ arm

    @property
    def bodies(self) -> tuple[int]:
        """Bodies of the robot in the physics client."""
        return (self.tool,)

    def joint_positions(self) -> np.ndarray:
        return self.arm.joint_positions()

    def reach_error(self, position, orientation) -> tuple[float, float]:
        return self.arm.reach_error(position, orientation)

    def follow_tool(self) -> None:
        # The previous solution is a warm start 1/30 s old, so one round tracks the tool.
        self.arm.solve_ik(*self.tool_pose(), rounds=1)

    # ------------------------------------------------------------ tool

    def tool_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pos, quat = p.getBasePositionAndOrientation(self.tool, physicsClientId=self.client)
        return np.array(pos), np.array(quat)

    def command(self, position, orientation) -> None:
        p.changeConstraint(
            self._drive, jointChildPivot=list(position), jointChildFrameOrientation=list(orientation),
            maxForce=self.max_force, physicsClientId=self.client,
        )

    def teleport_home(self) -> None:
        """Put tool and arm at home without simulating the motion (reset only: nothing is held)."""
        p.resetBasePositionAndOrientation(self.tool, self.home_position, self.home_orientation, physicsClientId=self.client)
        self.command(self.home_position, self.home_orientation)
        self.arm.go_home()

    def start_joint_log(self) -> None:
        """Forget logged joint states except the latest (the start of what comes next)."""
        self.joint_log = self.joint_log[-1:]

    def step(self) -> None:
        """One physics step; the arm follows the tool at JOINT_STATE_HZ and is logged for joint_states."""
        p.stepSimulation(physicsClientId=self.client)
        self.time += self.timestep
        if self.time + 1e-9 >= self._next_joint_time:
            self._next_joint_time += 1.0 / JOINT_STATE_HZ
            self.follow_tool()
            self.joint_log.append((self.time, self.joint_positions()))

    # ------------------------------------------------------------ suction

    def contacts(self, body: int, ignore: tuple[int, ...] = ()) -> list[int]:
        """Bodies touching `body`, except those in `ignore`."""
        points = p.getContactPoints(bodyA=body, physicsClientId=self.client)
        return sorted({c[2] for c in points if c[2] not in ignore and c[2] != body})

    def suction_on(self, movable: set[int]) -> int | None:
        """Grip the movable body the tool touches with a fixed constraint at their current relative pose."""
        touching = [b for b in self.contacts(self.tool) if b in movable]
        if not touching:
            return None
        body = touching[0]
        tool_pos, tool_quat = self.tool_pose()
        obj_pos, obj_quat = p.getBasePositionAndOrientation(body, physicsClientId=self.client)
        inv_pos, inv_quat = p.invertTransform(tool_pos.tolist(), tool_quat.tolist())
        rel_pos, rel_quat = p.multiplyTransforms(inv_pos, inv_quat, obj_pos, obj_quat)
        self._suction = p.createConstraint(
            self.tool, -1, body, -1, p.JOINT_FIXED, [0, 0, 0], rel_pos, [0, 0, 0], rel_quat, [0, 0, 0, 1],
            physicsClientId=self.client,
        )
        p.changeConstraint(self._suction, maxForce=200.0, physicsClientId=self.client)
        self.held = body
        return body

    def release(self) -> None:
        if self._suction is not None:
            p.removeConstraint(self._suction, physicsClientId=self.client)
        self._suction = None
        self.held = None
