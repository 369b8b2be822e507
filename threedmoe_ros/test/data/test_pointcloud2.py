"""The one PointCloud2 ↔ numpy conversion: what real drivers send decodes, bad clouds are named."""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from threedmoe_ros.data import pointcloud2
from threedmoe_ros.data.pointcloud2 import FLOAT32, Field
from threedmoe_ros.validation import InputError
from threedmoe_ros.types import Cloud


def make_cloud(n=50, seed=0) -> Cloud:
    rng = np.random.default_rng(seed)
    return Cloud(rng.uniform(-1, 1, (n, 3)), rng.integers(0, 256, (n, 3)), rng.integers(0, 5, n), frame_id="world")


def as_msg(fields: dict, frame_id="world") -> SimpleNamespace:
    return SimpleNamespace(header=SimpleNamespace(frame_id=frame_id), **fields)


def test_round_trip_keeps_xyz_rgb_label():
    cloud = make_cloud()
    back = pointcloud2.decode(as_msg(pointcloud2.encode_fields(cloud)))
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.rgb, cloud.rgb)
    np.testing.assert_array_equal(back.label, cloud.label)
    assert back.frame_id == "world"


def test_big_endian_padded_organised_cloud_decodes():
    """A 2×3 organised cloud, big-endian, with padding inside points and at row ends."""
    xyz = np.arange(18, dtype=np.float32).reshape(6, 3)
    point = np.dtype({"names": ["z", "x", "y"], "formats": [">f4"] * 3, "offsets": [0, 8, 16], "itemsize": 24})
    rows = []
    for r in range(2):
        pts = np.zeros(3, dtype=point)
        pts["x"], pts["y"], pts["z"] = xyz[3 * r : 3 * r + 3].T
        rows.append(pts.tobytes() + b"\0" * 8)  # 8 bytes of row padding
    msg = as_msg(dict(
        height=2, width=3, is_bigendian=True, point_step=24, row_step=3 * 24 + 8, data=b"".join(rows), is_dense=True,
        fields=[Field("z", 0, FLOAT32), Field("x", 8, FLOAT32), Field("y", 16, FLOAT32)],
    ))
    np.testing.assert_array_equal(pointcloud2.decode(msg).xyz, xyz)


def test_non_finite_points_are_dropped():
    cloud = make_cloud(10)
    cloud.xyz[3] = np.nan
    cloud.xyz[7, 2] = np.inf
    back = pointcloud2.decode(as_msg(pointcloud2.encode_fields(cloud)))
    assert len(back) == 8
    np.testing.assert_array_equal(back.label, np.delete(cloud.label, [3, 7]))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.update(fields=[x for x in f["fields"] if x.name != "z"]), "no field(s) z"),
        (lambda f: f.update(point_step=8), "does not fit in point_step 8"),
        (lambda f: f.update(data=f["data"][:-5]), "truncated"),
        (lambda f: f.update(width=0, row_step=0, data=b""), "empty"),
        (lambda f: f.update(width=3_000_000), "more than the limit"),
        (lambda f: f.update(fields=[Field("x", 0, 42), *f["fields"][1:]]), "unknown PointField datatype 42"),
    ],
)
def test_bad_clouds_raise_a_named_error(mutate, message):
    fields = pointcloud2.encode_fields(make_cloud())
    mutate(fields)
    with pytest.raises(InputError, match=re.escape(message)):
        pointcloud2.decode(as_msg(fields))


def test_all_nan_cloud_is_an_error():
    cloud = Cloud(np.full((4, 3), np.nan))
    with pytest.raises(InputError, match="no finite points"):
        pointcloud2.decode(as_msg(pointcloud2.encode_fields(cloud)))


def layout(xyz: np.ndarray, types: dict[str, str], big_endian: bool = False, pad: int = 0, extra=None):
    """A message with fields packed in `types` order (numpy codes, e.g. {"x": "f8", "label": "u2"})."""
    from threedmoe_ros.data.pointcloud2 import DATATYPES

    code = {v: k for k, v in DATATYPES.items()}
    order = ">" if big_endian else "<"
    names = list(types)
    dtype = np.dtype({"names": names, "formats": [order + types[n] for n in names],
                      "offsets": list(np.cumsum([0] + [np.dtype(types[n]).itemsize for n in names[:-1]])),
                      "itemsize": sum(np.dtype(types[n]).itemsize for n in names) + pad})
    points = np.zeros(len(xyz), dtype=dtype)
    for i, c in enumerate("xyz"):
        points[c] = xyz[:, i]
    for name, values in (extra or {}).items():
        points[name] = values
    fields = [Field(n, dtype.fields[n][1], code[types[n]]) for n in names]
    return as_msg(dict(height=1, width=len(xyz), fields=fields, is_bigendian=big_endian, point_step=dtype.itemsize,
                       row_step=dtype.itemsize * len(xyz), data=points.tobytes(), is_dense=True))


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("code", ["i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"])
def test_xyz_of_every_datatype_and_endianness_decodes(code, big_endian):
    xyz = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float64)
    msg = layout(xyz, {"z": code, "x": code, "y": code}, big_endian, pad=3)
    np.testing.assert_array_equal(pointcloud2.decode(msg).xyz, xyz.astype(np.float32))


def test_float64_xyz_keeps_precision_and_drops_beyond_float32():
    xyz = np.array([[0.123456789, 0.5, 0.25], [1e300, 0, 0], [0.5, 0.5, 0.5]])
    cloud = pointcloud2.decode(layout(xyz, {"x": "f8", "y": "f8", "z": "f8"}))
    assert len(cloud) == 2 and abs(float(cloud.xyz[0, 0]) - 0.123456789) < 1e-7


@pytest.mark.parametrize("code", ["f4", "u4", "i4"])
@pytest.mark.parametrize("big_endian", [False, True])
def test_packed_rgb_in_any_4_byte_field(code, big_endian):
    packed = np.array([0x00FF8001, 0x00010203], dtype=np.uint32)
    xyz = np.zeros((2, 3))
    msg = layout(xyz, {"x": "f4", "y": "f4", "z": "f4", "rgb": "u4"}, big_endian, extra={"rgb": packed})
    msg.fields[3].datatype = {"f4": 7, "u4": 6, "i4": 5}[code]  # same bits, declared as another 4-byte type
    np.testing.assert_array_equal(pointcloud2.decode(msg).rgb, [[255, 128, 1], [1, 2, 3]])


@pytest.mark.parametrize("code", ["u1", "i2", "u2", "i4", "u4", "f4", "f8"])
def test_label_of_any_integer_type_or_integral_float(code):
    xyz = np.zeros((3, 3))
    msg = layout(xyz, {"x": "f4", "y": "f4", "z": "f4", "label": code}, extra={"label": [0, 1, 7]})
    np.testing.assert_array_equal(pointcloud2.decode(msg).label, [0, 1, 7])


def test_fields_it_does_not_use_are_ignored_and_data_may_be_a_list_or_array():
    xyz = np.random.default_rng(0).uniform(0, 1, (4, 3)).astype(np.float32)
    msg = layout(xyz.astype(np.float64), {"x": "f4", "y": "f4", "z": "f4", "intensity": "f8"})
    msg.fields.append(Field("ring", 999, 42, 0))  # unknown type, far offset, count 0: not read, not checked
    for data in (msg.data, list(msg.data), np.frombuffer(msg.data, np.uint8), bytearray(msg.data)):
        msg.data = data
        np.testing.assert_array_equal(pointcloud2.decode(msg).xyz, xyz)


def test_unaligned_fields_read_in_place_and_overlapping_ones_are_refused():
    """x at offset 1 (unaligned) decodes as laid out; y and z reading the same bytes would put every
    point on a line, so the cloud is refused with the names of the fields that overlap."""
    point = np.zeros(2, dtype=np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [1, 5, 9],
                                        "itemsize": 13}))
    point["x"], point["y"], point["z"] = [1.5, 2.5], [3.5, 4.5], [5.5, 6.5]
    fields = [Field("x", 1, FLOAT32), Field("y", 5, FLOAT32), Field("z", 9, FLOAT32)]
    msg = as_msg(dict(height=1, width=2, is_bigendian=False, point_step=13, row_step=26, data=point.tobytes(),
                      is_dense=True, fields=fields))
    np.testing.assert_array_equal(pointcloud2.decode(msg).xyz, [[1.5, 3.5, 5.5], [2.5, 4.5, 6.5]])
    msg.fields = [Field("x", 1, FLOAT32), Field("y", 5, FLOAT32), Field("z", 7, FLOAT32)]
    with pytest.raises(InputError, match="fields 'y' and 'z' overlap"):
        pointcloud2.decode(msg)
    msg.fields = [Field("x", 0, FLOAT32), Field("y", 0, FLOAT32), Field("z", 0, FLOAT32)]
    with pytest.raises(InputError, match="overlap"):
        pointcloud2.decode(msg)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: setattr(m.fields[0], "count", 3), "field 'x' has count 3"),
    (lambda m: setattr(m.fields[0], "count", 0), "field 'x' has count 0"),
    (lambda m: setattr(m.fields[3], "count", 2), "field 'label' has count 2"),
    (lambda m: setattr(m.fields[4], "datatype", 2), "field 'rgb' is uint8; a packed colour is 4 bytes"),
    (lambda m: setattr(m.fields[4], "datatype", 8), "does not fit in point_step"),
    (lambda m: setattr(m.fields[1], "offset", 1000), "field 'y' (offset 1000, 4 bytes) does not fit"),
    (lambda m: setattr(m.fields[1], "offset", -4), "does not fit"),
    (lambda m: setattr(m.fields[2], "datatype", 0), "unknown PointField datatype 0"),
    (lambda m: m.fields.append(Field("x", 0, FLOAT32)), "2 fields named 'x'"),
    (lambda m: setattr(m, "point_step", 0), "point_step is 0"),
    (lambda m: setattr(m, "row_step", 1), "row_step 1 <"),
    (lambda m: setattr(m, "height", 3), "truncated"),
    (lambda m: setattr(m, "data", "not bytes"), "not a byte sequence"),
    (lambda m: setattr(m, "width", "many"), "width is not an integer"),
])
def test_layouts_the_decoder_cannot_use_are_named(mutate, message):
    msg = layout(np.zeros((4, 3)), {"x": "f4", "y": "f4", "z": "f4", "label": "i4", "rgb": "u4"})
    mutate(msg)
    with pytest.raises(InputError, match=re.escape(message)):
        pointcloud2.decode(msg)


def test_label_that_is_not_an_instance_id_is_named():
    msg = layout(np.zeros((2, 3)), {"x": "f4", "y": "f4", "z": "f4", "label": "f4"}, extra={"label": [0.5, 1]})
    with pytest.raises(InputError, match="not whole numbers"):
        pointcloud2.decode(msg)
    msg = layout(np.zeros((2, 3)), {"x": "f4", "y": "f4", "z": "f4", "label": "u4"}, extra={"label": [0, 2**32 - 1]})
    with pytest.raises(InputError, match="int32 range"):
        pointcloud2.decode(msg)


def test_random_layouts_decode_or_raise_only_input_error():
    """Any field table a driver could put in the message: a Cloud or an InputError, never another exception."""
    rng = np.random.default_rng(0)
    outcomes = {"cloud": 0, "refused": 0}
    for _ in range(400):
        names = ["x", "y", "z"][: 3 - int(rng.random() < 0.05)]
        names += list(rng.choice(["rgb", "rgba", "label", "intensity", "x"], int(rng.integers(0, 3))))
        point_step = int(rng.integers(1, 40)) if rng.random() < 0.95 else int(rng.integers(-1, 1))
        fields = [Field(str(n), int(rng.integers(0, max(point_step, 1))) if rng.random() < 0.9 else int(rng.integers(-8, 64)),
                        int(rng.integers(1, 9)) if rng.random() < 0.9 else int(rng.choice([0, 9, 255])),
                        1 if rng.random() < 0.85 else int(rng.integers(0, 5))) for n in names]
        width, height = int(rng.integers(0, 20)), int(rng.integers(0, 3))
        row_step = int(width * point_step + (rng.integers(0, 8) if rng.random() < 0.9 else rng.integers(-4, 0)))
        data = rng.integers(0, 256, int(max(0, row_step * height - (rng.random() < 0.1) * rng.integers(1, 8)))).astype(np.uint8).tobytes()
        msg = as_msg(dict(height=height, width=width, fields=fields, is_bigendian=bool(rng.integers(2)),
                          point_step=point_step, row_step=row_step, data=data, is_dense=False))
        try:
            pointcloud2.decode(msg)
            outcomes["cloud"] += 1
        except InputError:
            outcomes["refused"] += 1
    assert outcomes["cloud"] > 0 and outcomes["refused"] > 0, outcomes
