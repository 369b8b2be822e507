"""The one PointCloud2 ↔ numpy conversion: what real drivers send decodes, bad clouds are named."""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from threedmoe_ros.data import pointcloud2
from threedmoe_ros.data.pointcloud2 import FLOAT32, CloudError, Field
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
    with pytest.raises(CloudError, match=re.escape(message)):
        pointcloud2.decode(as_msg(fields))


def test_all_nan_cloud_is_an_error():
    cloud = Cloud(np.full((4, 3), np.nan))
    with pytest.raises(CloudError, match="no finite points"):
        pointcloud2.decode(as_msg(pointcloud2.encode_fields(cloud)))
