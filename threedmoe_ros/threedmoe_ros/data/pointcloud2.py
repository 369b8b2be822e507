"""The one PointCloud2 ↔ numpy conversion.

Works on any object shaped like sensor_msgs/PointCloud2 — an rclpy message, a `rosbags` message,
or a plain namespace — so the node layer, the bag reader and the tests share it, and this module
never imports rclpy. Decoding accepts what real drivers send: any point_step and field order,
either endianness, organised (height > 1) or not, rgb packed as float32 or uint32, non-finite
points (dropped). Anything else raises `CloudError` with a message naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from threedmoe_ros.types import Cloud

# sensor_msgs/PointField datatypes → numpy base types.
DATATYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
INT32, UINT32, FLOAT32 = 5, 6, 7

# Refuse clouds larger than this by default: a 10 M-point cloud is a driver misconfiguration,
# not a scene, and decoding it would stall a node for seconds.
MAX_POINTS = 2_000_000


class CloudError(ValueError):
    """A PointCloud2 that cannot be turned into a Cloud; the message says why."""


@dataclass
class Field:
    """Duck-typed sensor_msgs/PointField for encoding."""

    name: str
    offset: int
    datatype: int
    count: int = 1


def _field_dtype(fields, point_step: int, big_endian: bool) -> np.dtype:
    order = ">" if big_endian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        if f.datatype not in DATATYPES:
            raise CloudError(f"field '{f.name}' has unknown PointField datatype {f.datatype}")
        size = np.dtype(DATATYPES[f.datatype]).itemsize * max(int(f.count), 1)
        if f.offset < 0 or f.offset + size > point_step:
            raise CloudError(
                f"field '{f.name}' (offset {f.offset}, {size} bytes) does not fit in point_step {point_step}"
            )
        names.append(f.name)
        base = order + DATATYPES[f.datatype]
        formats.append(base if f.count <= 1 else (base, (int(f.count),)))
        offsets.append(int(f.offset))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def decode(msg, max_points: int = MAX_POINTS) -> Cloud:
    """sensor_msgs/PointCloud2 (any duck-typed object) → Cloud, dropping non-finite points."""
    fields = list(msg.fields)
    names = [f.name for f in fields]
    missing = [n for n in ("x", "y", "z") if n not in names]
    if missing:
        raise CloudError(f"PointCloud2 has no field(s) {', '.join(missing)} (fields: {names or 'none'})")
    if len(set(names)) != len(names):
        raise CloudError(f"PointCloud2 repeats a field name: {names}")
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    n = height * width
    if n == 0:
        raise CloudError("PointCloud2 is empty (width × height = 0)")
    if n > max_points:
        raise CloudError(f"PointCloud2 has {n} points, more than the limit {max_points}; downsample it first")
    if point_step <= 0:
        raise CloudError(f"PointCloud2 point_step is {point_step}")
    if row_step < width * point_step:
        raise CloudError(f"row_step {row_step} < width {width} × point_step {point_step}")
    data = msg.data
    buffer = data if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, dtype=np.uint8)
    nbytes = len(buffer) if not isinstance(buffer, np.ndarray) else buffer.nbytes
    if nbytes < row_step * height:
        raise CloudError(f"PointCloud2 data is truncated: {nbytes} bytes, expected row_step × height = {row_step * height}")
    dtype = _field_dtype(fields, point_step, bool(msg.is_bigendian))
    raw = np.frombuffer(buffer, dtype=np.uint8, count=row_step * height).reshape(height, row_step)
    points = raw[:, : width * point_step].copy().view(dtype).reshape(-1)

    xyz = np.stack([points["x"], points["y"], points["z"]], axis=-1).astype(np.float32)
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.any():
        raise CloudError("PointCloud2 has no finite points (all x/y/z are NaN or inf)")

    rgb = None
    colour = "rgb" if "rgb" in names else "rgba" if "rgba" in names else None
    if colour is not None:
        packed = np.ascontiguousarray(points[colour])
        # PCL packs 0x00RRGGBB into a float32's bits; reinterpret, never convert the value.
        packed = packed.astype(packed.dtype.newbyteorder("=")).view(np.uint32).reshape(-1)
        rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1).astype(np.uint8)
    label = None
    if "label" in names:
        label = points["label"].astype(np.int64).reshape(-1).astype(np.int32)

    cloud = Cloud(xyz, rgb, label, frame_id=str(msg.header.frame_id) if hasattr(msg, "header") else "")
    return cloud if finite.all() else cloud.subset(finite)


def encode_fields(cloud: Cloud) -> dict:
    """Cloud → the fields of an unorganised little-endian PointCloud2 (x y z [rgb] [label]).

    Returns a dict of PointCloud2 attributes; `conversions` (rclpy) and the bag writer (rosbags)
    build their own message objects from it.
    """
    fields = [Field("x", 0, FLOAT32), Field("y", 4, FLOAT32), Field("z", 8, FLOAT32)]
    formats = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if cloud.rgb is not None:
        fields.append(Field("rgb", 12, FLOAT32))
        formats.append(("rgb", "<u4"))
    if cloud.label is not None:
        fields.append(Field("label", 4 * len(formats), INT32))
        formats.append(("label", "<i4"))
    points = np.empty(len(cloud), dtype=formats)
    points["x"], points["y"], points["z"] = cloud.xyz.T
    if cloud.rgb is not None:
        c = cloud.rgb.astype(np.uint32)
        points["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    if cloud.label is not None:
        points["label"] = cloud.label
    point_step = points.dtype.itemsize
    return dict(
        height=1,
        width=len(cloud),
        fields=fields,
        is_bigendian=False,
        point_step=point_step,
        row_step=point_step * len(cloud),
        data=points.tobytes(),
        is_dense=bool(np.isfinite(cloud.xyz).all()),
    )
