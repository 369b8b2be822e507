"""ament_python package of threedmoe_ros: the ROS-free core (sim, models, data, train, eval),
the policy and its planner, and the thin ROS 2 nodes. Also installs with plain pip on a Python-only machine."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "threedmoe_ros"

# Nodes that `ros2 launch` starts: the executable name is what launch files name.
NODES = {
    "policy_node": "threedmoe_ros.nodes.policy_node:main",
    "sim_bridge_node": "threedmoe_ros.nodes.sim_bridge_node:main",
    "recorder_node": "threedmoe_ros.nodes.recorder_node:main",
    "evaluator_node": "threedmoe_ros.nodes.evaluator_node:main",
}
# Command-line tools a user runs by hand; only threedmoe-bringup starts ROS. After `colcon build`
# they are in lib/threedmoe_ros like the nodes: `ros2 run threedmoe_ros threedmoe-bringup sim_eval`.
CLIS = {
    "threedmoe-selfcheck": "threedmoe_ros.selfcheck:main",
    "threedmoe-bringup": "threedmoe_ros.bringup:main",
    "threedmoe-demo": "threedmoe_ros.demo:main",
    "threedmoe-collect": "threedmoe_ros.train.collect:main",
    "threedmoe-render": "threedmoe_ros.sim.render:main",
    "threedmoe-train-pose-dit": "threedmoe_ros.train.pose_dit:main",
    "threedmoe-train-object-encoder": "threedmoe_ros.train.object_encoder:main",
    "threedmoe-qa-data": "threedmoe_ros.data.qa:main",
    "threedmoe-train-stage2": "threedmoe_ros.train.stage2:main",
    "threedmoe-routing": "threedmoe_ros.eval.routing:main",
    "threedmoe-eval-closed-loop": "threedmoe_ros.eval.closed_loop:main",
    "threedmoe-pipeline": "threedmoe_ros.train.pipeline:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    package_data={PACKAGE: ["checkpoints/*/*"]},  # the embedded default policy
    include_package_data=True,
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="threedmoe_ros maintainers",
    maintainer_email="maintainers@threedmoe-ros.dev",
    description="3D-MoE pick-and-place planning on ROS 2, with a PyBullet tabletop.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in {**NODES, **CLIS}.items()],
    },
)
