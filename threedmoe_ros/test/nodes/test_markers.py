"""What RViz shows of a plan: an arrow and a step number per pick-and-place, and the instruction as text."""

import numpy as np
from visualization_msgs.msg import Marker

from threedmoe_ros.nodes.conversions import plan_to_markers


def test_markers_carry_every_step_and_the_instruction_text():
    plan = np.array([[[0.4, 0.1, 0.04, 0, 0, 0, 1], [0.6, -0.2, 0.05, 0, 0, 0, 1]],
                     [[0.5, 0.2, 0.04, 0, 0, 0, 1], [0.6, -0.2, 0.09, 0, 0, 0, 1]]])
    markers = plan_to_markers(plan, 7, "world", "stack the blocks").markers
    assert markers[0].action == Marker.DELETEALL  # the previous plan's markers go first
    arrows = [m for m in markers if m.type == Marker.ARROW and m.action == Marker.ADD]
    assert len(arrows) == 2 and arrows[1].points[1].z == 0.09
    text = [m for m in markers if m.ns == "instruction"]
    assert len(text) == 1 and text[0].type == Marker.TEXT_VIEW_FACING and text[0].text == "stack the blocks"
    assert not [m for m in plan_to_markers(plan, 7).markers if m.ns == "instruction"]
