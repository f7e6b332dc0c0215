"""Point painting: the sampler against scipy, the overlap rule on a hand-built two-camera rig,
thermal counts → kelvin, radar segments and Doppler arrows by hand, and the synthetic log's truth
(pedestrian temperatures, surface colours by lidarseg class, radar radial velocities)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from avfusion import (
    AVFusionError,
    Boxes3D,
    CameraModel,
    Image,
    LogFormatError,
    PointCloud,
    Sensor,
    Trajectory,
    Transform,
)
from avfusion.calibration.motion import observation_target_from_source
from avfusion.fusion.boxes import project_boxes_into_image
from avfusion.fusion.painting import (
    CountsToKelvin,
    paint_colour,
    paint_temperature,
    project_radar,
    sample_image,
)

REPO = Path(__file__).resolve().parents[2]
MS = 1_000_000
T0 = 1_700_000_000_000_000_000
#: ego_from_camera rotation of a camera looking along ego +x (camera x right, y down, z forward).
EGO_FROM_CAM = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
PINHOLE = CameraModel.pinhole(100.0, 100.0, 49.5, 39.5, 100, 80)


def camera(name: str, yaw_deg: float, modality: str = "camera", offset_ns: int = 0) -> Sensor:
    yaw = Transform.from_euler_zyx(np.deg2rad(yaw_deg), 0.0, 0.0)
    return Sensor(
        name,
        modality,  # type: ignore[arg-type]
        Transform(yaw.rotation @ EGO_FROM_CAM, np.zeros(3)),
        PINHOLE,
        offset_ns,
    )


LIDAR = Sensor("LIDAR_TOP", "lidar", Transform())


def points_at(azimuth_deg: Any, range_m: Any) -> npt.NDArray[np.float64]:
    az = np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64))
    r = np.asarray(range_m, dtype=np.float64)
    return np.column_stack([r * np.cos(az), r * np.sin(az), np.zeros_like(az)])


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def test_bilinear_sampling_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 9, 3)).astype(np.uint8)
    uv = np.column_stack([rng.uniform(-0.5, 8.4999, 500), rng.uniform(-0.5, 6.4999, 500)])
    uv[:4] = [[-0.5, -0.5], [8.4999, 6.4999], [3.0, 2.0], [0.0, 6.2]]
    got = sample_image(img, uv)
    coords = [np.clip(uv[:, 1], 0, 6), np.clip(uv[:, 0], 0, 8)]
    for c in range(3):
        ref = ndimage.map_coordinates(
            img[..., c].astype(np.float64), coords, order=1, mode="nearest"
        )
        np.testing.assert_allclose(got[:, c], ref, atol=1e-9)
    assert got[2].tolist() == img[2, 3].astype(float).tolist()  # a pixel centre is the pixel
    nearest = sample_image(img, uv, interpolation="nearest")
    rows = np.floor(uv[:, 1] + 0.5).astype(int).clip(0, 6)
    cols = np.floor(uv[:, 0] + 0.5).astype(int).clip(0, 8)
    np.testing.assert_array_equal(nearest, img[rows, cols].astype(np.float64))


def test_sampling_outside_masked_and_grey() -> None:
    grey = np.arange(12, dtype=np.uint16).reshape(3, 4)
    uv = np.array([[-0.51, 0.0], [3.5, 0.0], [0.0, 2.5], [np.nan, 1.0], [1.0, 1.0], [1.5, 0.5]])
    out = sample_image(grey, uv, np.array([True, True, True, True, False, True]))
    assert out.shape == (6, 1)
    assert np.isnan(out[:5, 0]).all()  # outside, NaN, or masked out
    assert out[5, 0] == pytest.approx((1 + 2 + 5 + 6) / 4)
    with pytest.raises(AVFusionError, match="interpolation must be one of"):
        sample_image(grey, uv, interpolation="cubic")  # type: ignore[arg-type]
    with pytest.raises(AVFusionError, match=r"uv_px must have shape \(N, 2\), got \(6,\)"):
        sample_image(grey, uv[:, 0])
    with pytest.raises(AVFusionError, match=r"mask has shape \(2,\), expected \(6,\)"):
        sample_image(grey, uv, np.ones(2, bool))
    with pytest.raises(AVFusionError, match="pixels must be an H×W or H×W×C array"):
        sample_image(np.zeros(5), uv)


# --------------------------------------------------------------------------------------------
# Colour: two overlapping cameras, built by hand
# --------------------------------------------------------------------------------------------


def two_camera_rig(
    t_left_ns: int = T0, t_right_ns: int = T0
) -> tuple[PointCloud, dict[str, Image]]:
    """Cameras yawed ±20° (53° field of view each: they overlap within ±6.6° of ego +x). The
    left image is a red ramp (R = column), the right one constant blue. Everything static."""
    ramp = np.zeros((80, 100, 3), np.uint8)
    ramp[..., 0] = np.arange(100, dtype=np.uint8)[None, :]
    blue = np.zeros((80, 100, 3), np.uint8)
    blue[..., 2] = 200
    pose = Transform()
    images = {
        "CAM_LEFT": Image(camera("CAM_LEFT", 20.0), t_left_ns, pose, pixels_or_none=ramp),
        "CAM_RIGHT": Image(camera("CAM_RIGHT", -20.0), t_right_ns, pose, pixels_or_none=blue),
    }
    # Azimuths (left +): left only, right only, overlap nearer the left camera's centre (3° is
    # 17° off its axis, 23° off the right camera's), overlap nearer the right one's (-5°),
    # behind, and a point hidden 10 m behind the left-only one.
    xyz = points_at([35.0, -35.0, 3.0, -5.0, 180.0, 35.0], [10.0, 10.0, 10.0, 10.0, 10.0, 20.0])
    cloud = PointCloud(xyz.astype(np.float32), LIDAR, T0, {}, pose, "sweep-1")
    return cloud, images


def test_paint_colour_border_rule_by_hand() -> None:
    cloud, images = two_camera_rig()
    res = paint_colour(cloud, images)
    assert res.cameras == ("CAM_LEFT", "CAM_RIGHT") and res.rule == "border"
    assert res.painted.tolist() == [True, True, True, True, False, False]
    assert res.n_cameras.tolist() == [1, 1, 2, 2, 0, 0]
    assert res.camera_index.tolist() == [0, 1, 0, 1, -1, -1]
    assert res.camera_names().tolist() == ["CAM_LEFT", "CAM_RIGHT", "CAM_LEFT", "CAM_RIGHT", "", ""]
    assert res.projections["CAM_LEFT"].occluded[5]  # hidden behind point 0, not dropped
    # Bilinear on the ramp: red equals the sub-pixel column.
    for i in (0, 2):
        u = res.uv_px[i, 0]
        assert u == pytest.approx(49.5 + 100 * np.tan(np.deg2rad(20.0 - [35.0, 3.0][i // 2])))
        np.testing.assert_allclose(res.rgb[i], [u, 0.0, 0.0], atol=1e-4)
    np.testing.assert_array_equal(res.rgb[[1, 3]], [[0, 0, 200], [0, 0, 200]])
    assert np.isnan(res.rgb[4:]).all() and np.isnan(res.uv_px[4:]).all()
    assert res.rgb.dtype == np.float32
    u8 = res.rgb_uint8()
    assert u8.dtype == np.uint8 and u8[4:].tolist() == [[0, 0, 0]] * 2
    assert u8[0, 0] == round(float(res.rgb[0, 0]))


def test_paint_colour_time_rule_and_ties() -> None:
    # The right camera fires 10 ms after the sweep, the left one 40 ms after: the time rule
    # gives every overlap point to the right camera.
    cloud, images = two_camera_rig(T0 + 40 * MS, T0 + 10 * MS)
    res = paint_colour(cloud, images, rule="time")
    assert res.camera_index.tolist() == [0, 1, 1, 1, -1, -1]
    # Per-point capture times count: a point fired 30 ms later is closer to the left camera.
    times = np.array([0, 0, 30 * MS, 0, 0, 0], dtype=np.int32)
    timed = dataclasses.replace(cloud, attrs={"point_time_ns": times})
    res = paint_colour(timed, images, rule="time", deskew=False)
    assert res.camera_index.tolist() == [0, 1, 0, 1, -1, -1]
    # Equal times: the border rule breaks the tie.
    cloud, images = two_camera_rig(T0 + 10 * MS, T0 + 10 * MS)
    assert paint_colour(cloud, images, rule="time").camera_index.tolist() == [0, 1, 0, 1, -1, -1]


def test_paint_colour_with_no_camera_and_bad_input() -> None:
    cloud, images = two_camera_rig()
    res = paint_colour(cloud, {})
    assert not res.painted.any() and res.cameras == () and np.isnan(res.rgb).all()
    with pytest.raises(AVFusionError, match="rule must be one of"):
        paint_colour(cloud, images, rule="centre")  # type: ignore[arg-type]
    with pytest.raises(AVFusionError, match=r"images\['CAM_X'\] is an image of sensor 'CAM_LEFT'"):
        paint_colour(cloud, {"CAM_X": images["CAM_LEFT"]})
    thermal = Image(
        camera("THERMAL", 0.0, "thermal"),
        T0,
        Transform(),
        pixels_or_none=np.zeros((80, 100), np.uint16),
    )
    with pytest.raises(AVFusionError, match="'THERMAL' is a thermal camera; colour painting needs"):
        paint_colour(cloud, {"THERMAL": thermal})
    deep = Image(
        camera("CAM_LEFT", 20.0), T0, Transform(), pixels_or_none=np.zeros((80, 100), np.uint16)
    )
    with pytest.raises(AVFusionError, match=r"'CAM_LEFT' at t=\d+ has uint16 pixels"):
        paint_colour(cloud, {"CAM_LEFT": deep})


# --------------------------------------------------------------------------------------------
# Temperature
# --------------------------------------------------------------------------------------------


def test_counts_to_kelvin_parsing() -> None:
    row = {
        "channel": "THERMAL_FRONT",
        "counts_to_kelvin": {
            "formula": "kelvin = scale_k * counts + offset_k",
            "scale_k": 0.01,
            "offset_k": 0.0,
            "netd_k": 0.05,
        },
    }
    m = CountsToKelvin.from_extras(row)
    assert (m.scale_k, m.offset_k, m.netd_k, m.sensor) == (0.01, 0.0, 0.05, "THERMAL_FRONT")
    assert CountsToKelvin.from_extras(row["counts_to_kelvin"], "T") == CountsToKelvin(
        0.01, 0.0, 0.05, "T"
    )
    np.testing.assert_allclose(
        m.kelvin(np.array([30000, 0, 65535], np.uint16)), [300.0, 0.0, 655.35]
    )
    with pytest.raises(
        LogFormatError, match=r"'THERMAL_FRONT': no counts_to_kelvin mapping .*keys: channel"
    ):
        CountsToKelvin.from_extras({"channel": "THERMAL_FRONT"})
    with pytest.raises(LogFormatError, match="'T': unsupported formula 'kelvin = a \\* exp"):
        CountsToKelvin.from_extras({"formula": "kelvin = a * exp(counts)", "scale_k": 1.0}, "T")
    with pytest.raises(LogFormatError, match=r"'T': scale_k must be > 0 K per count, got -0\.01"):
        CountsToKelvin.from_extras({"scale_k": -0.01}, "T")
    with pytest.raises(LogFormatError, match="'T': offset_k must be a finite number, got 'x'"):
        CountsToKelvin.from_extras({"scale_k": 0.01, "offset_k": "x"}, "T")
    with pytest.raises(LogFormatError, match="expected a mapping, got list"):
        CountsToKelvin.from_extras([], "T")  # type: ignore[arg-type]


def test_paint_temperature_by_hand() -> None:
    counts = (30000 + 10 * np.arange(100, dtype=np.uint16))[None, :].repeat(80, axis=0)
    thermal = Image(camera("THERMAL", 0.0, "thermal"), T0, Transform(), pixels_or_none=counts)
    xyz = points_at([10.0, -12.0, 60.0], [10.0, 15.0, 10.0])
    cloud = PointCloud(xyz, LIDAR, T0, {}, Transform())
    mapping = {"scale_k": 0.01, "offset_k": 0.0}
    res = paint_temperature(cloud, thermal, mapping)
    assert res.painted.tolist() == [True, True, False] and res.camera == "THERMAL"
    # kelvin = 0.01 * (30000 + 10 u) = 300 + 0.1 u, bilinear on a ramp: exact at sub-pixels.
    np.testing.assert_allclose(res.kelvin[:2], 300.0 + 0.1 * res.uv_px[:2, 0], atol=1e-9)
    np.testing.assert_allclose(res.celsius[:2], res.kelvin[:2] - 273.15)
    assert np.isnan(res.kelvin[2])
    colour = Image(
        camera("CAM", 0.0), T0, Transform(), pixels_or_none=np.zeros((80, 100, 3), np.uint8)
    )
    with pytest.raises(AVFusionError, match="'CAM' is a camera sensor, not a thermal camera"):
        paint_temperature(cloud, colour, mapping)
    fake = Image(
        camera("THERMAL", 0.0, "thermal"),
        T0,
        Transform(),
        pixels_or_none=np.zeros((80, 100, 3), np.uint8),
    )
    with pytest.raises(AVFusionError, match="must be H×W uint16 radiometric counts, got uint8"):
        paint_temperature(cloud, fake, mapping)


# --------------------------------------------------------------------------------------------
# Radar by hand
# --------------------------------------------------------------------------------------------

RADAR = Sensor("RADAR_FRONT", "radar", Transform(np.eye(3), np.array([3.41, 0.0, 0.53])))


def radar_cloud(
    xyz: Any, vx: Any, vy: Any, t_ns: int = T0, pose: Transform | None = None
) -> PointCloud:
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    return PointCloud(
        xyz,
        RADAR,
        t_ns,
        {
            "vx_comp": np.asarray(vx, np.float32),
            "vy_comp": np.asarray(vy, np.float32),
            "vx": np.zeros(len(xyz), np.float32),
        },
        Transform() if pose is None else pose,
        "radar-1",
    )


def test_radar_segments_and_arrows_by_hand() -> None:
    cam = Sensor("CAM_FRONT", "camera", Transform(EGO_FROM_CAM, np.array([1.7, 0.0, 1.5])), PINHOLE)
    image = Image(cam, T0, Transform(), pixels_or_none=np.zeros((80, 100, 3), np.uint8))
    cloud = radar_cloud(
        [[10.0, 1.0, 0.0], [-8.0, 0.0, 0.0], [5.0, 30.0, 0.0]], [-4.0, 0, 0], [2.0, 0, 0]
    )
    cam_from_ego = cam.ego_from_sensor.inverse()

    def px(p_ego: Any) -> npt.NDArray[np.float64]:
        return PINHOLE.project(np.asarray(cam_from_ego.apply(np.array(p_ego, dtype=float)[None])))[
            0
        ][0]

    rp = project_radar(cloud, image, heights_m=(0.0, 2.0))
    # Detection at radar (10, 1, 0) = ego (13.41, 1, 0.53): segment from ego z 0 to 2.
    np.testing.assert_allclose(rp.bottom_uv_px[0], px([13.41, 1.0, 0.0]), atol=1e-9)
    np.testing.assert_allclose(rp.top_uv_px[0], px([13.41, 1.0, 2.0]), atol=1e-9)
    np.testing.assert_allclose(rp.point_uv_px[0], px([13.41, 1.0, 0.53]), atol=1e-9)
    np.testing.assert_allclose(rp.bottom_uv_px[0, 0], rp.top_uv_px[0, 0])  # vertical
    # Arrow: the detection plus v · 0.5 s = radar (8, 2, 0).
    np.testing.assert_allclose(rp.arrow_end_uv_px[0], px([11.41, 2.0, 0.53]), atol=1e-9)
    np.testing.assert_array_equal(rp.arrow_start_uv_px, rp.point_uv_px)
    np.testing.assert_allclose(rp.velocity_radar[0], [-4.0, 2.0, 0.0])
    assert rp.depth_m[0] == pytest.approx(13.41 - 1.7)
    # Behind the camera: nothing projectable. Far to the side: in front, off the image.
    assert rp.segment_valid.tolist() == [True, False, False]
    assert rp.arrow_valid.tolist() == [True, False, False] and rp.point_in_image.tolist() == [
        True,
        False,
        False,
    ]
    assert np.isnan(rp.bottom_uv_px[1]).all() and np.isfinite(rp.bottom_uv_px[2]).all()
    # Heights relative to the detection: z 0.53 ± 1.
    rel = project_radar(
        cloud, image, heights_m=(-1.0, 1.0), height_reference="detection", arrow_dt_s=1.0
    )
    np.testing.assert_allclose(rel.bottom_uv_px[0], px([13.41, 1.0, -0.47]), atol=1e-9)
    np.testing.assert_allclose(rel.top_uv_px[0], px([13.41, 1.0, 1.53]), atol=1e-9)
    np.testing.assert_allclose(rel.arrow_end_uv_px[0], px([9.41, 3.0, 0.53]), atol=1e-9)
    # Raw (not compensated) Doppler on request.
    raw = project_radar(cloud, image, velocity_attrs=("vx", "vx"))
    np.testing.assert_allclose(raw.arrow_end_uv_px[0], raw.point_uv_px[0])


def test_radar_is_motion_compensated() -> None:
    t = T0 + np.arange(0, 500 * MS, 10 * MS, dtype=np.int64)
    tr = np.column_stack([(t - T0) * 1e-8, np.zeros(len(t)), np.zeros(len(t))])  # 10 m/s
    poses = Trajectory(t, np.tile([1.0, 0.0, 0.0, 0.0], (len(t), 1)), tr, "straight")
    cam = Sensor("CAM_FRONT", "camera", Transform(EGO_FROM_CAM, np.array([1.7, 0.0, 1.5])), PINHOLE)
    image = Image(cam, T0 + 100 * MS, None, pixels_or_none=np.zeros((80, 100, 3), np.uint8))
    cloud = dataclasses.replace(
        radar_cloud([[10.0, 1.0, 0.0]], [0.0], [0.0], T0 + 50 * MS), world_from_ego=None
    )
    rp = project_radar(cloud, image, poses)
    expected = observation_target_from_source(image, cloud, poses)
    assert rp.camera_from_radar.allclose(expected, atol=1e-12)
    # The camera is 0.5 m further along: the detection is 0.5 m nearer than the static chain says.
    static = project_radar(cloud, image, poses, motion_compensation=False)
    assert static.depth_m[0] - rp.depth_m[0] == pytest.approx(0.5, abs=1e-9)


def test_radar_bad_input_is_named() -> None:
    image = Image(
        camera("CAM", 0.0), T0, Transform(), pixels_or_none=np.zeros((80, 100, 3), np.uint8)
    )
    cloud = radar_cloud([[10.0, 1.0, 0.0]], [1.0], [0.0])
    lidar = PointCloud(np.zeros((1, 3)), LIDAR, T0, {}, Transform())
    with pytest.raises(AVFusionError, match="'LIDAR_TOP' is a lidar sensor, not a radar"):
        project_radar(lidar, image)
    bare = dataclasses.replace(cloud, attrs={"rcs": np.zeros(1)})
    with pytest.raises(
        AVFusionError,
        match=r"project_radar of 'RADAR_FRONT' radar-1: no velocity attribute 'vx_comp', 'vy_comp' \(attributes: rcs\)",
    ):
        project_radar(bare, image)
    with pytest.raises(AVFusionError, match="heights_m must be \\(bottom, top\\)"):
        project_radar(cloud, image, heights_m=(2.0, 0.0))
    with pytest.raises(AVFusionError, match="arrow_dt_s must be a positive number"):
        project_radar(cloud, image, arrow_dt_s=0.0)
    with pytest.raises(AVFusionError, match="height_reference must be 'ego' or 'detection'"):
        project_radar(cloud, image, height_reference="sensor")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# sample_data: the synthetic world's truth
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_log() -> Path:
    from avfusion.synth import ensure_sample_data

    return ensure_sample_data(REPO / "sample_data")


def with_true_clock(image: Image, offset_ns: int) -> Image:
    """The image as taken by a sensor with the true clock offset; its pose then comes from the
    pose track at stamp + offset (the stored pose is the log's, at the stamp)."""
    sensor = dataclasses.replace(image.sensor, time_offset_ns=offset_ns)
    return dataclasses.replace(image, sensor=sensor, world_from_ego=None)


def truth_boxes(
    anns: list[dict[str, Any]], sample_token: str, category: str | None = None
) -> Boxes3D:
    rows = [
        a for a in anns if a["sample_token"] == sample_token and category in (None, a["category"])
    ]
    return Boxes3D(
        np.array([a["translation"] for a in rows]).reshape(-1, 3),
        np.array([a["size_lwh"] for a in rows]).reshape(-1, 3),
        np.array([a["rotation"] for a in rows]).reshape(-1, 4),
        [a["category"] for a in rows],
        [a["track_id"] for a in rows],
        "world",
        np.array([a["velocity"] for a in rows]).reshape(-1, 3),
    )


def test_painted_temperature_over_pedestrians_matches_the_truth(sample_log: Path) -> None:
    """LiDAR points inside the clean truth pedestrian boxes, painted from THERMAL_FRONT (bilinear,
    deskewed, occlusion on), against the surface temperature the synth rendered there: the
    object's ``temperature_k`` (303 K; skin ``hot_k`` 307 K) + 1.5 K × max(n · sun, 0)
    (``synth.camera``). The surface point and its normal come from casting each LiDAR beam, from
    the true sensor pose at the point's capture time, into the true world.

    Tolerance: |error| < 0.5 K for >= 85 % of the points and a median < 0.1 K. The detector adds
    NETD 0.05 K + a 0.03 K column pattern; the remaining large errors are points on the
    silhouette, where a pixel blends person and background (a walking pedestrian moves up to
    11 cm between the LiDAR and thermal captures, 3-5 px at 10-20 m).
    Measured over the 13 keyframes: 124 points, median |error| 0.034 K, 91 % within 0.5 K,
    90th percentile 0.27 K. With the clock offset the log believes (0 instead of +25 ms: the
    camera pose 25 cm off at 10 m/s): 129 points, median 0.064 K but only 58 % within 0.5 K,
    90th percentile 15.2 K (points painted with the background).
    """
    from avfusion.io import NuScenesLog
    from avfusion.synth.camera import SUN_DIRECTION
    from avfusion.synth.raycast import cast_rays
    from avfusion.synth.world import TEX_SKIN, build_world

    log = NuScenesLog(sample_log)
    truth = sample_log / "truth"
    scene = json.loads((truth / "scene.json").read_text())
    anns = json.loads((truth / "annotations.json").read_text())
    cal = json.loads((truth / "calibration.json").read_text())["sensors"]
    true_times = json.loads((truth / "sample_data_times.json").read_text())
    track = np.load(truth / "ego_trajectory.npz")
    true_poses = Trajectory(track["t_ns"], track["quaternions"], track["translations"], "truth")
    ego_from_lidar = Transform.from_quaternion(
        np.array(cal["LIDAR_TOP"]["ego_from_sensor"]["rotation"]),
        np.array(cal["LIDAR_TOP"]["ego_from_sensor"]["translation"]),
    )
    world = build_world(scene["seconds"], scene["seed"], scene["t0_ns"])
    texture = world.material_table()["texture"]
    objects = world.object_table()
    mapping = CountsToKelvin.from_extras(log.sensor_extras["THERMAL_FRONT"])
    assert (mapping.scale_k, mapping.offset_k) == (0.01, 0.0)

    errors: dict[str, list[npt.NDArray[np.float64]]] = {"truth": [], "log": []}
    for k in range(len(log)):
        frame = log.frame(k, with_boxes=False)
        peds = truth_boxes(anns, frame.token, "human.pedestrian.adult")
        if len(peds) == 0:
            continue
        cloud = frame.points["LIDAR_TOP"]
        t_true = int(true_times[cloud.token]["t_true_ns"])
        # Each point in the world at its own capture time (true pose, true extrinsic).
        t_i = t_true + cloud.attrs["point_time_ns"].astype(np.int64)
        rot, tr = true_poses.interpolate_many(t_i)
        p_ego = np.asarray(ego_from_lidar.apply(cloud.xyz.astype(np.float64)))
        p_world = np.einsum("nij,nj->ni", rot, p_ego) + tr
        origin = np.einsum("nij,j->ni", rot, ego_from_lidar.translation) + tr
        inside = np.zeros(len(cloud), bool)
        for b in range(len(peds)):
            local = (p_world - peds.center[b]) @ peds.rotation_matrices()[b]
            half = peds.size[b] / 2
            inside |= np.all(np.abs(local) <= half, axis=1) & (local[:, 2] > 0.1 - half[2])
        thermal = frame.images["THERMAL_FRONT"]
        for clock, image in (
            ("truth", with_true_clock(thermal, cal["THERMAL_FRONT"]["clock_offset_ns"])),
            ("log", thermal),
        ):
            painted = paint_temperature(cloud, image, mapping, log.poses)
            sel = np.flatnonzero(inside & painted.painted)
            ray = p_world[sel] - origin[sel]
            ray /= np.linalg.norm(ray, axis=1, keepdims=True)
            prims = world.primitive_arrays(t_true)
            _, prim, normal = cast_rays(
                origin[sel],
                ray,
                prims,
                world.params,
                times_s=(t_i[sel] - t_true) / 1e9,
                max_range_m=100.0,
            )
            hit = np.maximum(prim, 0)
            obj = prims["object"][hit]
            on_person = (prim >= 0) & np.array(
                [world.objects[o].kind == "pedestrian" for o in obj], bool
            )
            skin = texture[prims["material"][hit]] == TEX_SKIN
            true_k = np.where(skin, objects["hot_k"][obj], objects["temperature_k"][obj])
            true_k = true_k + 1.5 * np.maximum(normal @ SUN_DIRECTION, 0.0)
            errors[clock].append((painted.kelvin[sel] - true_k)[on_person])
    err = {c: np.abs(np.concatenate(e)) for c, e in errors.items()}
    stats = {
        c: (
            e.size,
            round(float(np.median(e)), 3),
            round(float(np.mean(e < 0.5)), 3),
            round(float(np.percentile(e, 90)), 2),
        )
        for c, e in err.items()
    }
    assert err["truth"].size > 80, stats
    assert np.median(err["truth"]) < 0.1 and np.mean(err["truth"] < 0.5) > 0.85, stats
    assert np.mean(err["log"] < 0.5) < 0.75 and np.percentile(err["log"], 90) > 5.0, stats


LIDARSEG = {"road": 24, "sidewalk": 26, "terrain": 27, "vegetation": 30}


def test_paint_colour_on_sample_data(sample_log: Path) -> None:
    """Colours of the rendered materials by lidarseg class (the synth's albedos: asphalt grey
    (0.33, 0.33, 0.34), sidewalk concrete (0.62, 0.60, 0.57), leaves green), the overlap rule on
    real overlaps, and the number of painted points."""
    from avfusion.io import NuScenesLog

    log = NuScenesLog(sample_log)
    frame = log.frame(6, with_boxes=False)
    cloud = log.load_points(frame.points["LIDAR_TOP"].token, with_lidarseg=True)
    cams = {n: im for n, im in frame.images.items() if im.sensor.modality == "camera"}
    res = paint_colour(cloud, cams, log.poses)
    assert set(res.cameras) == {"CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"}
    # Measured: 44 % of the sweep painted (the cameras cover the front 165°), 3.0 % (662
    # points) seen by two cameras. Mean RGB: road (67, 67, 69), sidewalk (115, 112, 106),
    # vegetation (17, 41, 13).
    assert 0.2 < res.painted.mean() < 0.5 and (res.n_cameras > 1).sum() > 100
    seg = cloud.attrs["lidarseg"]
    mean = {name: res.rgb[res.painted & (seg == c)].mean(axis=0) for name, c in LIDARSEG.items()}
    r, g, b = mean["road"]
    assert abs(r - g) < 8 and abs(g - b) < 8, mean
    assert mean["sidewalk"].sum() > mean["road"].sum() + 60, mean
    veg = mean["vegetation"]
    assert veg[1] > veg[0] + 15 and veg[1] > veg[2] + 15, mean
    # Where two cameras see a point the chosen one sees it farther from its border.
    both = np.flatnonzero(res.n_cameras > 1)
    margins = np.full((len(res.cameras), both.size), -np.inf)
    for k, name in enumerate(res.cameras):
        proj, cam = res.projections[name], cams[name].camera
        uv = proj.uv_px[both]
        m = np.minimum.reduce(
            [
                uv[:, 0] + 0.5,
                cam.width - 0.5 - uv[:, 0],
                uv[:, 1] + 0.5,
                cam.height - 0.5 - uv[:, 1],
            ]
        )
        margins[k] = np.where(proj.valid[both], m, -np.inf)
    np.testing.assert_array_equal(res.camera_index[both], np.argmax(margins, axis=0))


def test_radar_on_sample_data(sample_log: Path) -> None:
    """RADAR_FRONT (13 Hz) into CAM_FRONT on every keyframe. ``vx_comp``/``vy_comp`` are the
    radial component of the target's own velocity: on moving truth cars they match the box
    velocity along the line of sight. The arrows of approaching targets point down the image
    (the detections sit 0.5 m above the ground, below the 1.5 m camera: nearer is lower),
    receding ones up. The segment of a detection on a car crosses the car's projected box."""
    from avfusion.io import NuScenesLog

    log = NuScenesLog(sample_log)
    anns = json.loads((sample_log / "truth" / "annotations.json").read_text())
    n_moving = n_arrows = n_segments = 0
    for k in range(len(log)):
        frame = log.frame(k, with_boxes=False)
        radar = frame.points["RADAR_FRONT"]
        image = frame.images["CAM_FRONT"]
        rp = project_radar(radar, image, log.poses)
        assert len(rp) == len(radar)
        p = radar.xyz.astype(np.float64)
        rng_xy = np.hypot(p[:, 0], p[:, 1])
        v_r = (radar.attrs["vx_comp"] * p[:, 0] + radar.attrs["vy_comp"] * p[:, 1]) / rng_xy
        # Arrows: direction in the image from the sign of the radial velocity.
        fast = rp.arrow_valid & (np.abs(v_r) > 2.0)
        dv = rp.arrow_end_uv_px[fast, 1] - rp.arrow_start_uv_px[fast, 1]
        assert np.all(np.sign(dv) == -np.sign(v_r[fast])), (k, dv, v_r[fast])
        n_arrows += int(fast.sum())
        # Truth: moving cars, in the radar frame at the radar's time (moved along their velocity).
        cars = truth_boxes(anns, frame.token, "vehicle.car")
        moving = np.linalg.norm(cars.velocity, axis=1) > 1.0  # type: ignore[arg-type]
        if not moving.any():
            continue
        cars = cars.select(moving)
        dt = (radar.t_ns - frame.t_ns) * 1e-9
        world_from_radar = radar.world_from_ego @ radar.sensor.ego_from_sensor  # type: ignore[operator]
        radar_cars = dataclasses.replace(cars, center=cars.center + cars.velocity * dt).transformed(
            world_from_radar.inverse(), "RADAR_FRONT"
        )
        rot = radar_cars.rotation_matrices()
        boxes_px = project_boxes_into_image(cars, image, log.poses, boxes_t_ns=frame.t_ns)
        for b in range(len(radar_cars)):
            local = (p - radar_cars.center[b]) @ rot[b]
            # Detections within 0.5 m of the box (range and azimuth noise), except probable false
            # alarms (pdh0 4: false-alarm probability >= 75 %; clutter can land on a box).
            on = np.all(np.abs(local[:, :2]) <= radar_cars.size[b, :2] / 2 + 0.5, axis=1)
            on &= radar.attrs["pdh0"] < 4
            if not on.any():
                continue
            los = p[on] / np.linalg.norm(p[on], axis=1, keepdims=True)
            expected = los @ radar_cars.velocity[b]  # type: ignore[index]
            np.testing.assert_allclose(v_r[on], expected, atol=0.5)
            n_moving += int(on.sum())
            seg = on & rp.segment_valid
            if seg.any() and boxes_px.visible[b]:
                x0, y0, x1, y1 = boxes_px.xyxy[b]
                u = rp.bottom_uv_px[seg, 0]
                assert np.all((u > x0 - 15) & (u < x1 + 15)), (u, boxes_px.xyxy[b])
                assert np.all(rp.top_uv_px[seg, 1] < y1) and np.all(rp.bottom_uv_px[seg, 1] > y0)
                n_segments += int(seg.sum())
    # Measured: 39 fast arrows (|v_r| > 2 m/s), 27 detections on moving cars (v_r within
    # 0.25 m/s of the truth), all 27 segments in view crossing their car's projected box.
    assert n_arrows > 20 and n_moving > 20 and n_segments > 15, (n_arrows, n_moving, n_segments)


@pytest.mark.realdata
def test_paint_colour_on_the_real_nuscenes_keyframe(realdata: Path) -> None:
    """Six real cameras around the car: every painted point carries the colour of its own
    camera's pixel, every camera paints, and a point is painted exactly when some camera sees it."""
    from avfusion.io import NuScenesLog

    log = NuScenesLog(realdata / "nuscenes-keyframe")
    frame = log[0]
    cloud = frame.points["LIDAR_TOP"]
    result = paint_colour(cloud, frame.images, log.poses)
    names = list(result.projections)
    assert sorted(names) == sorted(frame.images) and len(names) == 6
    seen = np.zeros(len(cloud), bool)
    for proj in result.projections.values():
        seen |= proj.valid
    np.testing.assert_array_equal(result.painted, seen)
    # 34,688 points; about 22.7k project into the six images (MANIFEST, z > 1 m, no occlusion)
    assert 0.45 < result.painted.mean() < 0.70, result.painted.mean()
    counts = np.bincount(result.camera_index[result.painted], minlength=6)
    assert (counts > 1000).all(), counts
    for k, name in enumerate(names):
        mine = result.camera_index == k
        expected = sample_image(frame.images[name].pixels, result.uv_px[mine])
        np.testing.assert_allclose(result.rgb[mine], expected, atol=1e-3)
