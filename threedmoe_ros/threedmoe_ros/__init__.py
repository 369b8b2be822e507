"""threedmoe_ros: 3D-MoE pick-and-place planning on ROS 2.

Rooms, by what they may import (see DESIGN.md §2):
  sim/     PyBullet tabletop (numpy + pybullet)
  models/  point encoder, MoE LLM, Pose-DiT, schedulers (torch + transformers + peft)
  data/    clouds, plans, rosbag2 episodes, datasets (numpy + rosbags; no rclpy)
  train/, eval/  command-line entry points (collection, training, evaluation)
  policy.py  the model: encoder + Pose-DiT + codec + scheduler, trained and saved as one
  planner.py the one facade that nodes, evaluation and benchmarks plan through
  serving.py the heads a planner samples with: TorchScript-frozen, half precision
  nodes/   the only code that imports rclpy
"""

__version__ = "0.1.0"
