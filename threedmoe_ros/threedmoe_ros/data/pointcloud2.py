"""The one PointCloud2 ↔ numpy conversion.

Works on any object shaped like sensor_msgs/PointCloud2 — an rclpy message, a `rosbags` message,
or a plain namespace — so the node layer, the bag reader and the tests share it, and this module
never imports rclpy. Decoding reads what the message type allows: x y z of any PointField
datatype, any point_step, row_step and field order, fields at any offset (overlapping or
unaligned), either endianness, organised (height > 1) or not; rgb/rgba packed in any 4-byte field
(0x00RRGGBB in a float32's or uint32's bits, as PCL does); label of any integer type (or integral
floats). Fields it does not use are ignored. Non-finite points are dropped. Everything else —
unknown datatypes, a used field with count ≠ 1 or not inside point_step, a wrong-width colour,
inconsistent sizes, truncated data — raises `InputError` naming the problem; no other exception
leaves `decode`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from threedmoe_ros.types import Cloud
from threedmoe_ros.validation import MAX_POINTS, InputError  # noqa: F401 (MAX_POINTS re-exported)

# sensor_msgs/PointField datatypes → numpy base types.
DATATYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
NAMES = {1: "int8", 2: "uint8", 3: "int16", 4: "uint16", 5: "int32", 6: "uint32", 7: "float32", 8: "float64"}
INT32, UINT32, FLOAT32 = 5, 6, 7


@dataclass
class Field:
    """Duck-typed sensor_msgs/PointField for encoding."""

    name: str
    offset: int
    datatype: int
    count: int = 1


def _as_int(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"PointCloud2 {what} is not an integer: {value!r}") from None


def _buffer(data) -> np.ndarray:
    """msg.data (bytes, array.array, numpy array or a list of ints) as a flat uint8 array, no copy where possible."""
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except (TypeError, ValueError):
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"PointCloud2 data is not a byte sequence ({type(data).__name__})") from None


def decode(msg, max_points: int = MAX_POINTS) -> Cloud:
    """sensor_msgs/PointCloud2 (any duck-typed object) → Cloud, dropping non-finite points; InputError if impossible."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return _decode(msg, max_points)
    except InputError:
        raise
    except (AttributeError, TypeError, ValueError, OverflowError, IndexError, UnicodeError) as exc:
        # A layout the checks below did not foresee: still a reason, never a crash.
        raise InputError(f"PointCloud2 cannot be decoded: {type(exc).__name__}: {exc}") from None


def _decode(msg, max_points: int) -> Cloud:
    fields = list(msg.fields)
    names = [str(f.name) for f in fields]
    missing = [n for n in ("x", "y", "z") if n not in names]
    if missing:
        raise InputError(f"PointCloud2 has no field(s) {', '.join(missing)} (fields: {names or 'none'})")
    height, width = _as_int(msg.height, "height"), _as_int(msg.width, "width")
    point_step, row_step = _as_int(msg.point_step, "point_step"), _as_int(msg.row_step, "row_step")
    if height < 0 or width < 0:
        raise InputError(f"PointCloud2 height {height} / width {width} is negative")
    n = height * width
    if n == 0:
        raise InputError(f"PointCloud2 is empty (width {width} × height {height} = 0)")
    if n > max_points:
        raise InputError(f"PointCloud2 has {n} points, more than the limit {max_points}; downsample it first")
    if point_step <= 0:
        raise InputError(f"PointCloud2 point_step is {point_step}; it must be the size of one point in bytes")
    if row_step < width * point_step:
        raise InputError(f"PointCloud2 row_step {row_step} < width {width} × point_step {point_step}")
    buffer = _buffer(msg.data)
    if buffer.nbytes < row_step * height:
        raise InputError(
            f"PointCloud2 data is truncated: {buffer.nbytes} bytes, expected row_step × height = {row_step * height}")
    order = ">" if bool(msg.is_bigendian) else "<"

    colour = "rgb" if "rgb" in names else "rgba" if "rgba" in names else None
    used = [n for n in ("x", "y", "z", colour, "label") if n is not None and n in names]
    by_name = {}
    for name in used:
        matches = [f for f in fields if str(f.name) == name]
        if len(matches) > 1:
            raise InputError(f"PointCloud2 has {len(matches)} fields named '{name}'; field names must be unique")
        f = matches[0]
        datatype, count, offset = _as_int(f.datatype, f"field '{name}' datatype"), _as_int(f.count, f"field '{name}' count"), \
            _as_int(f.offset, f"field '{name}' offset")
        if datatype not in DATATYPES:
            raise InputError(f"field '{name}' has unknown PointField datatype {datatype} (known: 1–8, {', '.join(NAMES.values())})")
        if count != 1:
            raise InputError(f"field '{name}' has count {count}; x, y, z, rgb and label hold one value per point (count 1)")
        size = np.dtype(DATATYPES[datatype]).itemsize
        if offset < 0 or offset + size > point_step:
            raise InputError(f"field '{name}' (offset {offset}, {size} bytes) does not fit in point_step {point_step}")
        by_name[name] = (datatype, offset)
    # Fields that share bytes (x, y and z all at offset 0) would decode every point onto a line:
    # a layout the message type allows but no sensor writes, so it is refused, not planned on.
    spans = sorted((offset, offset + np.dtype(DATATYPES[datatype]).itemsize, name)
                   for name, (datatype, offset) in by_name.items())
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise InputError(f"PointCloud2 fields '{first}' and '{second}' overlap (bytes {start}–{end - 1} of each "
                             "point); every field needs bytes of its own")

    def column(name: str, base: str | None = None) -> np.ndarray:
        """(n,) values of one field, read in place through strides: any offset, padding or row_step."""
        datatype, offset = by_name[name]
        view = np.ndarray((height, width), dtype=np.dtype(order + (base or DATATYPES[datatype])), buffer=buffer,
                          offset=offset, strides=(row_step, point_step))
        return view.reshape(-1)

    xyz = np.stack([column(c).astype(np.float64) for c in "xyz"], axis=-1)
    finite = np.isfinite(xyz).all(axis=1) & (np.abs(xyz) <= np.finfo(np.float32).max).all(axis=1)
    if not finite.any():
        raise InputError(f"PointCloud2 has no finite points (all {n} have NaN, inf or beyond-float32 x/y/z)")

    rgb = None
    if colour is not None:
        datatype, _ = by_name[colour]
        if np.dtype(DATATYPES[datatype]).itemsize != 4:
            raise InputError(f"field '{colour}' is {NAMES[datatype]}; a packed colour is 4 bytes "
                             "(float32 or uint32 holding 0x00RRGGBB)")
        # PCL packs 0x00RRGGBB into a float32's bits; reinterpret the bits, never convert the value.
        packed = column(colour, "u4").astype(np.uint32)
        rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1).astype(np.uint8)
    label = None
    if "label" in by_name:
        raw = column("label")
        if raw.dtype.kind == "f":
            ok = np.isfinite(raw) & (raw == np.round(raw))
            if not ok[finite].all():
                raise InputError("field 'label' holds values that are not whole numbers; labels are instance ids (0 = table)")
        values = np.where(np.isfinite(raw), raw, 0).astype(np.int64) if raw.dtype.kind == "f" else raw.astype(np.int64)
        info = np.iinfo(np.int32)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise InputError(f"field 'label' has values outside the int32 range ({values.min()} … {values.max()})")
        label = values.astype(np.int32)

    frame = msg.header.frame_id if hasattr(msg, "header") else ""
    cloud = Cloud(xyz.astype(np.float32), rgb, label, frame_id=str(frame))
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
