"""The synthetic driving world: road, terrain, scenery, moving actors and the ego vehicle.

Everything here is analytic and seeded, so the truth is exact at any instant:

* **Road.** A centreline that runs straight along world +x from ``ROAD_ORIGIN`` and then turns
  left on a circular arc of radius ``ROAD_RADIUS_M``. A point has a signed lateral offset ``d``
  (metres, positive to the left of the direction of travel) and an arc length ``s``. The cross
  section is: driveable surface ``|d| < 6.0`` (two 3.5 m lanes centred at ``d = ∓1.75`` and a
  2.5 m parking strip on each side), sidewalk ``6.0 ≤ |d| < 9.0``, terrain beyond.
* **Ground.** A smooth height field ``z = h(x, y)`` (gentle slope and undulation, plus a raised
  verge off the road), so the ego has real z, pitch and roll. There are no kerbs: the sidewalk
  differs from the road by material only.
* **Objects.** Each object is a union of primitives (yaw-rotated boxes and ellipsoids) sitting on
  the ground, with an Occ3D class, a nuScenes category, a lidarseg index, a track id, a surface
  temperature (kelvin) and a radar cross-section (dBsm). Moving objects follow the road at
  a lateral offset with a smoothly varying speed.
* **Ego.** Drives the right lane at 8–12 m/s; its ``world_from_ego`` pose track (200 Hz) has z
  from the ground, pitch and roll from the ground slope plus a small suspension oscillation.

The world frame is the map frame of the written log: all coordinates are positive so that the
nuScenes map mask (0.1 m per pixel, origin at the lower-left corner) covers the scene.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from avfusion.calibration.transforms import Trajectory, Transform

__all__ = [
    "LIDARSEG_CLASSES",
    "OCC3D_CLASSES",
    "ClassInfo",
    "Primitive",
    "SceneObject",
    "World",
    "build_world",
    "ground_height",
    "road_sd",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Class tables
# --------------------------------------------------------------------------------------------

#: Occ3D-nuScenes classes (index = value in ``labels.npz`` ``semantics``).
OCC3D_CLASSES: tuple[str, ...] = (
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
    "pedestrian", "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat",
    "sidewalk", "terrain", "manmade", "vegetation", "free",
)  # fmt: skip
OCC3D_FREE = 17

#: nuScenes-lidarseg's 32 classes (index = value in ``<token>_lidarseg.bin``).
LIDARSEG_CLASSES: tuple[str, ...] = (
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller", "human.pedestrian.wheelchair",
    "movable_object.barrier", "movable_object.debris", "movable_object.pushable_pullable",
    "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle",
    "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.car", "vehicle.construction",
    "vehicle.emergency.ambulance", "vehicle.emergency.police", "vehicle.motorcycle",
    "vehicle.trailer", "vehicle.truck", "flat.driveable_surface", "flat.other", "flat.sidewalk",
    "flat.terrain", "static.manmade", "static.other", "static.vegetation", "vehicle.ego",
)  # fmt: skip


@dataclass(frozen=True)
class ClassInfo:
    """Class of a surface: nuScenes category, lidarseg index and Occ3D index."""

    category: str
    lidarseg: int
    occ3d: int
    annotated: bool  # has 3D boxes in sample_annotation (nuScenes annotates only these)


def _cls(category: str, occ3d: int, annotated: bool) -> ClassInfo:
    return ClassInfo(category, LIDARSEG_CLASSES.index(category), occ3d, annotated)


CLASSES: dict[str, ClassInfo] = {
    "car": _cls("vehicle.car", 4, True),
    "truck": _cls("vehicle.truck", 10, True),
    "bus": _cls("vehicle.bus.rigid", 3, True),
    "pedestrian": _cls("human.pedestrian.adult", 7, True),
    "bicycle": _cls("vehicle.bicycle", 2, True),
    "barrier": _cls("movable_object.barrier", 1, True),
    "traffic_cone": _cls("movable_object.trafficcone", 8, True),
    "bicycle_rack": _cls("static_object.bicycle_rack", 0, True),
    "manmade": _cls("static.manmade", 15, False),
    "vegetation": _cls("static.vegetation", 16, False),
    "driveable_surface": _cls("flat.driveable_surface", 11, False),
    "sidewalk": _cls("flat.sidewalk", 13, False),
    "terrain": _cls("flat.terrain", 14, False),
    "ego": _cls("vehicle.ego", 0, False),
}

# --------------------------------------------------------------------------------------------
# Materials: colour (RGB 0..1), LiDAR reflectivity (0..1), texture kind
# --------------------------------------------------------------------------------------------

#: Texture kinds understood by the shader (see ``camera.py``).
(
    TEX_PLAIN,
    TEX_ROAD,
    TEX_SIDEWALK,
    TEX_TERRAIN,
    TEX_BUILDING,
    TEX_CAR,
    TEX_FOLIAGE,
    TEX_STRIPES,
    TEX_SKIN,
) = range(9)

#: Ground material ids (fixed; the ground is not an object).
MAT_ROAD, MAT_SIDEWALK, MAT_TERRAIN = 0, 1, 2


@dataclass
class Material:
    """Surface appearance: ``rgb`` albedo 0..1, LiDAR ``reflectivity`` 0..1, texture kind."""

    rgb: tuple[float, float, float]
    reflectivity: float
    texture: int


# --------------------------------------------------------------------------------------------
# Road and ground (numba, shared by every sensor and by the labels)
# --------------------------------------------------------------------------------------------

#: World position of the start of the arc (end of the straight), metres.
ROAD_ORIGIN = (100.0, 100.0)
#: Radius of the left-hand curve, metres.
ROAD_RADIUS_M = 70.0
ROAD_HALF_WIDTH_M = 6.0  # driveable |d| < 6
SIDEWALK_OUTER_M = 9.0  # sidewalk 6 <= |d| < 9
LANE_CENTRE_M = 1.75  # right lane at d = -1.75 (ego and same-direction traffic)
PARKING_CENTRE_M = 4.75  # parking strips at |d| = 4.75

#: Parameter vector the numba road/ground functions take: ox, oy, radius, half width, sidewalk.
ROAD_PARAMS = np.array(
    [ROAD_ORIGIN[0], ROAD_ORIGIN[1], ROAD_RADIUS_M, ROAD_HALF_WIDTH_M, SIDEWALK_OUTER_M]
)


@njit(cache=True)
def road_sd(x: float, y: float, params: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(s, d) of a world point: arc length along the centreline and signed lateral offset (left +)."""
    ox, oy, radius = params[0], params[1], params[2]
    cx, cy = ox, oy + radius
    theta = np.arctan2(x - cx, -(y - cy))
    if theta >= 0.0:
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        return radius * theta, radius - r
    return x - ox, y - oy


@njit(cache=True)
def road_point(s: float, d: float, params: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """World (x, y) and heading (rad) of the point at arc length ``s`` and offset ``d``."""
    ox, oy, radius = params[0], params[1], params[2]
    if s < 0.0:
        return ox + s, oy + d, 0.0
    theta = s / radius
    return ox + (radius - d) * np.sin(theta), oy + radius - (radius - d) * np.cos(theta), theta


@njit(cache=True)
def _smoothstep(a: float, b: float, x: float) -> float:
    t = min(max((x - a) / (b - a), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


@njit(cache=True)
def ground_height(x: float, y: float, params: npt.NDArray[np.float64]) -> float:
    """Ground z (metres) at world (x, y).

    A 2 % slope along x, a ±0.35 m undulation with ~140 m wavelength, and a verge that rises by
    up to 0.6 m between 10 m and 16 m from the road centreline (with a 0.1 m ripple).
    """
    ox, oy = params[0], params[1]
    u = x - ox
    v = y - oy
    z = 0.02 * u + 0.35 * np.sin(0.045 * u) * np.cos(0.03 * v)
    _, d = road_sd(x, y, params)
    verge = _smoothstep(10.0, 16.0, abs(d))
    z += verge * (0.6 + 0.1 * np.sin(0.21 * x + 0.17 * y))
    return z


@njit(cache=True)
def ground_gradient(x: float, y: float, params: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(dz/dx, dz/dy) of ``ground_height`` by central differences (1 cm step)."""
    e = 0.01
    gx = (ground_height(x + e, y, params) - ground_height(x - e, y, params)) / (2 * e)
    gy = (ground_height(x, y + e, params) - ground_height(x, y - e, params)) / (2 * e)
    return gx, gy


@njit(cache=True)
def ground_material(x: float, y: float, params: npt.NDArray[np.float64]) -> int:
    """MAT_ROAD, MAT_SIDEWALK or MAT_TERRAIN from the lateral offset."""
    _, d = road_sd(x, y, params)
    ad = abs(d)
    if ad < params[3]:
        return 0
    if ad < params[4]:
        return 1
    return 2


@njit(cache=True)
def ground_material_many(
    xy: npt.NDArray[np.float64], params: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """``ground_material`` for points (N, >=2)."""
    out = np.empty(xy.shape[0], dtype=np.int64)
    for i in range(xy.shape[0]):
        out[i] = ground_material(xy[i, 0], xy[i, 1], params)
    return out


@njit(cache=True)
def ground_height_many(
    xy: npt.NDArray[np.float64], params: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``ground_height`` for points (N, >=2)."""
    out = np.empty(xy.shape[0])
    for i in range(xy.shape[0]):
        out[i] = ground_height(xy[i, 0], xy[i, 1], params)
    return out


# --------------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------------

PRIM_BOX, PRIM_ELLIPSOID = 0, 1


@dataclass
class Primitive:
    """A part of an object, in the object's body frame (x forward, y left, z up from the ground).

    ``offset`` is the part centre (m) in the body frame, ``half`` its half extents (m).
    """

    kind: int
    offset: tuple[float, float, float]
    half: tuple[float, float, float]
    material: int


@dataclass
class SceneObject:
    """One object of the world.

    ``box_size`` is the (length, width, height) of its truth box, which encloses all parts; the
    box centre sits ``height / 2`` above the ground at the object's position. Static objects have
    ``speed_mps`` 0. Moving objects follow the road: at time t (s since the start of the scene)
    the arc length is ``s0 + speed·t + speed_wobble·sin(0.5·t + phase)`` at constant offset ``d``
    and the heading follows the road (reversed when ``speed_mps < 0``).
    ``temperature_k`` is the surface temperature, ``hot_k`` the temperature of the hot part
    (engine bay at the front quarter of vehicles, skin of people), ``rcs_dbsm`` the radar
    cross-section.
    """

    track_id: str
    kind: str  # key of CLASSES
    box_size: tuple[float, float, float]
    parts: list[Primitive]
    s0: float
    d: float
    yaw_offset: float = 0.0
    speed_mps: float = 0.0
    speed_wobble: float = 0.0
    phase: float = 0.0
    temperature_k: float = 290.0
    hot_k: float = 290.0
    rcs_dbsm: float = 0.0
    attribute: str = ""

    @property
    def info(self) -> ClassInfo:
        return CLASSES[self.kind]

    @property
    def moving(self) -> bool:
        return self.speed_mps != 0.0


@dataclass
class World:
    """The whole scene: objects, materials and the ego pose track."""

    objects: list[SceneObject]
    materials: list[Material]
    world_from_ego: Trajectory
    ego_speed: npt.NDArray[np.float64]  # (T,) m/s at the trajectory's samples
    t0_ns: int
    duration_ns: int
    params: npt.NDArray[np.float64] = field(default_factory=lambda: ROAD_PARAMS.copy())

    # -- object state ------------------------------------------------------------------------
    def object_pose(
        self, obj: SceneObject, t_ns: int | npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """(x, y, z_centre, yaw) of the object's box at one or more times (array (..., 4))."""
        t = (np.asarray(t_ns, dtype=np.int64) - self.t0_ns) / 1e9
        s = obj.s0 + obj.speed_mps * t + obj.speed_wobble * np.sin(0.5 * t + obj.phase)
        s_arr = np.atleast_1d(np.asarray(s, dtype=np.float64))
        out = np.empty((s_arr.size, 4))
        for i, si in enumerate(s_arr):
            x, y, heading = road_point(float(si), obj.d, self.params)
            yaw = heading + obj.yaw_offset + (np.pi if obj.speed_mps < 0 else 0.0)
            out[i] = (x, y, ground_height(x, y, self.params) + obj.box_size[2] / 2.0, _wrap(yaw))
        return out.reshape((*np.shape(t), 4))

    def object_velocity(self, obj: SceneObject, t_ns: int) -> npt.NDArray[np.float64]:
        """World velocity (m/s, 3) of the box centre by a ±5 ms central difference."""
        if not obj.moving:
            return np.zeros(3)
        h = 5_000_000
        p = self.object_pose(obj, np.array([t_ns - h, t_ns + h]))
        return (p[1, :3] - p[0, :3]) / (2 * h / 1e9)

    def box_transform(self, obj: SceneObject, t_ns: int) -> Transform:
        """``world_from_box`` at ``t_ns`` (yaw only: boxes stay upright, as in nuScenes)."""
        x, y, z, yaw = self.object_pose(obj, t_ns)
        return Transform.from_euler_zyx(float(yaw), 0.0, 0.0, (float(x), float(y), float(z)))

    def primitive_arrays(self, t_ns: int) -> dict[str, npt.NDArray[Any]]:
        """All primitives at ``t_ns`` as flat arrays for the numba kernels.

        Keys: ``kind`` (P,) int32, ``center`` (P, 3) world m, ``half`` (P, 3) m, ``yaw`` (P,) rad,
        ``velocity`` (P, 3) m/s (for motion within a LiDAR sweep), ``object`` (P,) int32 index
        into ``objects``, ``material`` (P,) int32.
        """
        kinds, centers, halves, yaws, vels, objs, mats = [], [], [], [], [], [], []
        for oi, obj in enumerate(self.objects):
            x, y, zc, yaw = self.object_pose(obj, t_ns)
            vel = self.object_velocity(obj, t_ns)
            c, s = np.cos(yaw), np.sin(yaw)
            z_ground = zc - obj.box_size[2] / 2.0
            for part in obj.parts:
                ox, oy, oz = part.offset
                centers.append((x + c * ox - s * oy, y + s * ox + c * oy, z_ground + oz))
                kinds.append(part.kind)
                halves.append(part.half)
                yaws.append(yaw)
                vels.append(vel)
                objs.append(oi)
                mats.append(part.material)
        return {
            "kind": np.asarray(kinds, dtype=np.int32),
            "center": np.asarray(centers, dtype=np.float64).reshape(-1, 3),
            "half": np.asarray(halves, dtype=np.float64).reshape(-1, 3),
            "yaw": np.asarray(yaws, dtype=np.float64),
            "velocity": np.asarray(vels, dtype=np.float64).reshape(-1, 3),
            "object": np.asarray(objs, dtype=np.int32),
            "material": np.asarray(mats, dtype=np.int32),
        }

    def material_table(self) -> dict[str, npt.NDArray[Any]]:
        """``rgb`` (M, 3), ``reflectivity`` (M,), ``texture`` (M,) int32."""
        return {
            "rgb": np.array([m.rgb for m in self.materials], dtype=np.float64),
            "reflectivity": np.array([m.reflectivity for m in self.materials], dtype=np.float64),
            "texture": np.array([m.texture for m in self.materials], dtype=np.int32),
        }

    def object_table(self) -> dict[str, npt.NDArray[Any]]:
        """Per-object arrays: ``lidarseg`` and ``occ3d`` (int32), ``temperature_k``, ``hot_k``, ``rcs_dbsm``."""
        return {
            "lidarseg": np.array([o.info.lidarseg for o in self.objects], dtype=np.int32),
            "occ3d": np.array([o.info.occ3d for o in self.objects], dtype=np.int32),
            "temperature_k": np.array([o.temperature_k for o in self.objects], dtype=np.float64),
            "hot_k": np.array([o.hot_k for o in self.objects], dtype=np.float64),
            "rcs_dbsm": np.array([o.rcs_dbsm for o in self.objects], dtype=np.float64),
            "moving": np.array([o.moving for o in self.objects], dtype=np.bool_),
        }


def _wrap(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


# --------------------------------------------------------------------------------------------
# Scene construction
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.materials: list[Material] = [
            Material((0.33, 0.33, 0.34), 0.10, TEX_ROAD),  # MAT_ROAD asphalt
            Material((0.62, 0.60, 0.57), 0.25, TEX_SIDEWALK),  # MAT_SIDEWALK concrete slabs
            Material((0.30, 0.42, 0.20), 0.35, TEX_TERRAIN),  # MAT_TERRAIN grass and soil
        ]
        self.objects: list[SceneObject] = []
        self.counts: dict[str, int] = {}

    def material(self, rgb: tuple[float, float, float], reflectivity: float, texture: int) -> int:
        self.materials.append(Material(rgb, reflectivity, texture))
        return len(self.materials) - 1

    def add(self, kind: str, **kw: Any) -> SceneObject:
        n = self.counts.get(kind, 0)
        self.counts[kind] = n + 1
        obj = SceneObject(track_id=f"{kind}-{n:02d}", kind=kind, **kw)
        self.objects.append(obj)
        return obj

    # -- object recipes (dimensions in metres, temperatures in kelvin, RCS in dBsm) ----------
    def car(self, s0: float, d: float, speed: float = 0.0, wobble: float = 0.0) -> None:
        r = self.rng
        length, width = 4.4 + 0.4 * r.random(), 1.8 + 0.1 * r.random()
        colours = [
            (0.7, 0.1, 0.1),
            (0.1, 0.2, 0.6),
            (0.8, 0.8, 0.8),
            (0.1, 0.1, 0.1),
            (0.2, 0.5, 0.3),
        ]
        paint = self.material(colours[int(r.integers(len(colours)))], 0.6, TEX_CAR)
        glass = self.material((0.08, 0.1, 0.14), 0.05, TEX_PLAIN)
        body_h, cabin_h = 0.85, 0.65
        parts = [
            Primitive(
                PRIM_BOX, (0.0, 0.0, 0.2 + body_h / 2), (length / 2, width / 2, body_h / 2), paint
            ),
            Primitive(
                PRIM_BOX,
                (-0.2, 0.0, 0.2 + body_h + cabin_h / 2),
                (length * 0.27, width / 2 - 0.08, cabin_h / 2),
                glass,
            ),
        ]
        moving = speed != 0.0
        self.add(
            "car", box_size=(length, width, 0.2 + body_h + cabin_h), parts=parts, s0=s0, d=d, speed_mps=speed,
            speed_wobble=wobble, phase=float(r.uniform(0, 6.28)), temperature_k=293.0,
            hot_k=330.0 if moving else 296.0, rcs_dbsm=float(r.uniform(8.0, 14.0)),
            attribute="vehicle.moving" if moving else "vehicle.parked",
        )  # fmt: skip

    def bus(self, s0: float, d: float, speed: float) -> None:
        paint = self.material((0.85, 0.65, 0.1), 0.6, TEX_CAR)
        length, width, height = 11.0, 2.5, 3.2
        parts = [
            Primitive(
                PRIM_BOX,
                (0.0, 0.0, 0.3 + (height - 0.3) / 2),
                (length / 2, width / 2, (height - 0.3) / 2),
                paint,
            )
        ]
        self.add(
            "bus", box_size=(length, width, height), parts=parts, s0=s0, d=d, speed_mps=speed, speed_wobble=0.5,
            temperature_k=294.0, hot_k=335.0, rcs_dbsm=20.0, attribute="vehicle.moving",
        )  # fmt: skip

    def truck(self, s0: float, d: float) -> None:
        cab = self.material((0.9, 0.9, 0.92), 0.6, TEX_CAR)
        cargo = self.material((0.55, 0.55, 0.6), 0.5, TEX_STRIPES)
        parts = [
            Primitive(PRIM_BOX, (2.6, 0.0, 1.5), (0.9, 1.2, 1.2), cab),
            Primitive(PRIM_BOX, (-0.9, 0.0, 1.95), (2.6, 1.25, 1.65), cargo),
        ]
        self.add(
            "truck", box_size=(7.0, 2.5, 3.6), parts=parts, s0=s0, d=d, temperature_k=292.0, hot_k=300.0,
            rcs_dbsm=18.0, attribute="vehicle.parked",
        )  # fmt: skip

    def pedestrian(self, s0: float, d: float, speed: float) -> None:
        r = self.rng
        shirt = self.material(tuple(r.uniform(0.1, 0.9, 3).round(3)), 0.3, TEX_PLAIN)
        trousers = self.material((0.15, 0.15, 0.25), 0.25, TEX_PLAIN)
        skin = self.material((0.85, 0.65, 0.5), 0.3, TEX_SKIN)
        height = 1.65 + 0.2 * r.random()
        parts = [
            Primitive(PRIM_BOX, (0.0, 0.0, 0.42), (0.12, 0.18, 0.42), trousers),
            Primitive(
                PRIM_BOX,
                (0.0, 0.0, 0.84 + (height - 1.1) / 2),
                (0.14, 0.23, (height - 1.1) / 2),
                shirt,
            ),
            Primitive(PRIM_ELLIPSOID, (0.0, 0.0, height - 0.13), (0.1, 0.1, 0.13), skin),
        ]
        self.add(
            "pedestrian", box_size=(0.6, 0.7, height), parts=parts, s0=s0, d=d, speed_mps=speed,
            speed_wobble=0.2, phase=float(r.uniform(0, 6.28)), temperature_k=303.0, hot_k=307.0, rcs_dbsm=-8.0,
            attribute="pedestrian.moving" if speed else "pedestrian.standing",
        )  # fmt: skip

    def cyclist(self, s0: float, d: float, speed: float) -> None:
        frame_m = self.material((0.1, 0.5, 0.8), 0.5, TEX_PLAIN)
        rider = self.material((0.8, 0.2, 0.2), 0.3, TEX_PLAIN)
        skin = self.material((0.85, 0.65, 0.5), 0.3, TEX_SKIN)
        parts = [
            Primitive(PRIM_BOX, (0.0, 0.0, 0.5), (0.85, 0.05, 0.45), frame_m),
            Primitive(PRIM_BOX, (-0.1, 0.0, 1.25), (0.2, 0.2, 0.32), rider),
            Primitive(PRIM_ELLIPSOID, (0.0, 0.0, 1.68), (0.11, 0.1, 0.12), skin),
        ]
        self.add(
            "bicycle", box_size=(1.8, 0.6, 1.8), parts=parts, s0=s0, d=d, speed_mps=speed, speed_wobble=0.3,
            temperature_k=300.0, hot_k=307.0, rcs_dbsm=-3.0, attribute="cycle.with_rider",
        )  # fmt: skip

    def building(self, s0: float, d: float, length: float, depth: float, height: float) -> None:
        r = self.rng
        base = tuple(np.round(r.uniform([0.45, 0.35, 0.3], [0.8, 0.7, 0.6]), 3))
        wall = self.material(base, 0.45, TEX_BUILDING)
        parts = [
            Primitive(PRIM_BOX, (0.0, 0.0, height / 2), (length / 2, depth / 2, height / 2), wall)
        ]
        self.add(
            "manmade", box_size=(length, depth, height), parts=parts, s0=s0, d=d, temperature_k=288.0,
            hot_k=290.0, rcs_dbsm=30.0,
        )  # fmt: skip

    def tree(self, s0: float, d: float) -> None:
        r = self.rng
        bark = self.material((0.35, 0.25, 0.15), 0.4, TEX_PLAIN)
        leaves = self.material((0.15, 0.38 + 0.1 * r.random(), 0.12), 0.5, TEX_FOLIAGE)
        crown_r = 1.6 + 0.8 * r.random()
        trunk_h = 2.2 + 0.6 * r.random()
        height = trunk_h + 1.6 * crown_r
        parts = [
            Primitive(PRIM_BOX, (0.0, 0.0, trunk_h / 2), (0.15, 0.15, trunk_h / 2), bark),
            Primitive(
                PRIM_ELLIPSOID,
                (0.0, 0.0, trunk_h + 0.8 * crown_r),
                (crown_r, crown_r, 0.8 * crown_r),
                leaves,
            ),
        ]
        self.add(
            "vegetation", box_size=(2 * crown_r, 2 * crown_r, height), parts=parts, s0=s0, d=d,
            temperature_k=285.0, hot_k=285.0, rcs_dbsm=5.0,
        )  # fmt: skip

    def pole(self, s0: float, d: float) -> None:
        metal = self.material((0.45, 0.45, 0.48), 0.7, TEX_PLAIN)
        parts = [Primitive(PRIM_BOX, (0.0, 0.0, 3.5), (0.1, 0.1, 3.5), metal)]
        self.add(
            "manmade",
            box_size=(0.2, 0.2, 7.0),
            parts=parts,
            s0=s0,
            d=d,
            temperature_k=287.0,
            hot_k=287.0,
            rcs_dbsm=10.0,
        )

    def barrier(self, s0: float, d: float) -> None:
        mat = self.material((0.85, 0.1, 0.1), 0.8, TEX_STRIPES)
        parts = [Primitive(PRIM_BOX, (0.0, 0.0, 0.5), (1.0, 0.25, 0.5), mat)]
        self.add(
            "barrier",
            box_size=(2.0, 0.5, 1.0),
            parts=parts,
            s0=s0,
            d=d,
            temperature_k=289.0,
            hot_k=289.0,
            rcs_dbsm=2.0,
        )

    def cone(self, s0: float, d: float) -> None:
        mat = self.material((0.95, 0.45, 0.05), 0.9, TEX_STRIPES)
        parts = [
            Primitive(PRIM_BOX, (0.0, 0.0, 0.03), (0.2, 0.2, 0.03), mat),
            Primitive(PRIM_ELLIPSOID, (0.0, 0.0, 0.06), (0.15, 0.15, 0.66), mat),
        ]
        self.add(
            "traffic_cone",
            box_size=(0.4, 0.4, 0.72),
            parts=parts,
            s0=s0,
            d=d,
            temperature_k=289.0,
            hot_k=289.0,
            rcs_dbsm=-10.0,
        )

    def bicycle_rack(self, s0: float, d: float) -> None:
        metal = self.material((0.6, 0.6, 0.62), 0.7, TEX_STRIPES)
        parts = [Primitive(PRIM_BOX, (0.0, 0.0, 0.4), (1.5, 0.05, 0.4), metal)]
        self.add(
            "bicycle_rack",
            box_size=(3.0, 0.1, 0.8),
            parts=parts,
            s0=s0,
            d=d,
            temperature_k=288.0,
            hot_k=288.0,
            rcs_dbsm=0.0,
        )


#: Arc length (m) where the ego starts; the curve begins at s = 0.
EGO_START_S = -35.0
EGO_LANE_D = -LANE_CENTRE_M


def _ego_speed(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ego speed (m/s): 10 ± 1.5, period ~16 s, so always within 8–12 m/s."""
    return 10.0 + 1.5 * np.sin(0.4 * t)


def _ego_s(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Integral of ``_ego_speed`` from 0."""
    return EGO_START_S + 10.0 * t + (1.5 / 0.4) * (1.0 - np.cos(0.4 * t))


def build_world(seconds: float, seed: int, t0_ns: int = 1_700_000_000_000_000_000) -> World:
    """The default scene for a recording of ``seconds`` seconds starting at ``t0_ns``.

    Scenery covers the road from 40 m behind the ego's start to 60 m beyond where it ends.
    ``seed`` varies colours, sizes, placement jitter and actor speeds; the layout is fixed.
    """
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    s_end = float(_ego_s(np.array([seconds]))[0])
    s_lo, s_hi = EGO_START_S - 40.0, s_end + 60.0
    jit = lambda a: float(rng.uniform(-a, a))  # noqa: E731

    # Static scenery on both sides.
    s = s_lo
    while s < s_hi:
        for side in (-1.0, 1.0):
            length = float(rng.uniform(10.0, 18.0))
            depth = float(rng.uniform(8.0, 12.0))
            b.building(
                s + length / 2 + jit(1.0),
                side * (14.0 + depth / 2),
                length,
                depth,
                float(rng.uniform(5.0, 15.0)),
            )
        s += float(rng.uniform(16.0, 22.0))
    s = s_lo + 5.0
    while s < s_hi:
        b.tree(s + jit(2.0), float(rng.choice([-1.0, 1.0])) * (10.8 + jit(0.5)))
        s += float(rng.uniform(7.0, 12.0))
    s = s_lo
    while s < s_hi:
        b.pole(s, -6.4)
        b.pole(s + 12.5, 6.4)
        s += 25.0

    # Construction zone on the right side ahead of the ego: cones and barriers in the parking strip.
    zone = EGO_START_S + 45.0
    for i in range(6):
        b.cone(zone + 2.5 * i, -4.0 + jit(0.1))
    for i in range(3):
        b.barrier(zone + 2.2 * i + 1.0, -5.4)
    b.bicycle_rack(EGO_START_S + 22.0, -8.2)

    # Parked cars on the left strip, a parked truck on the right strip behind the construction zone.
    s = EGO_START_S + 5.0
    while s < s_hi - 10.0:
        if rng.random() < 0.8:
            b.car(s, PARKING_CENTRE_M + jit(0.15))
        s += float(rng.uniform(6.0, 8.5))
    b.truck(zone + 22.0, -4.6)

    # Moving traffic: a lead car in the ego lane, oncoming cars and a bus, a cyclist, pedestrians.
    b.car(EGO_START_S + 22.0, EGO_LANE_D, speed=9.5 + jit(0.5), wobble=1.0)
    b.car(EGO_START_S + 70.0, LANE_CENTRE_M, speed=-(9.0 + jit(1.0)), wobble=0.8)
    b.car(EGO_START_S + 120.0, LANE_CENTRE_M, speed=-(10.0 + jit(1.0)), wobble=0.5)
    b.bus(EGO_START_S + 95.0, LANE_CENTRE_M, speed=-8.0)
    b.car(EGO_START_S - 15.0, EGO_LANE_D, speed=11.0, wobble=0.5)
    b.cyclist(EGO_START_S + 14.0, -3.6, speed=5.0)
    for i, (s_ped, d_ped, v_ped) in enumerate(
        [
            (10.0, -7.4, 1.3),
            (25.0, -7.8, -1.2),
            (38.0, 7.5, 1.4),
            (55.0, 7.2, -1.1),
            (30.0, -8.4, 0.0),
            (70.0, -7.5, 1.0),
        ]
    ):
        b.pedestrian(EGO_START_S + s_ped + jit(1.0), d_ped, v_ped * (1.0 + 0.1 * i % 3))

    t0 = int(t0_ns)
    world_from_ego, speed = _ego_trajectory(seconds, t0)
    logger.debug("world: %d objects, %d materials", len(b.objects), len(b.materials))
    return World(b.objects, b.materials, world_from_ego, speed, t0, round(seconds * 1e9))


#: Pose track sample rate (Hz).
EGO_POSE_RATE_HZ = 200
#: Margin (s) of pose track before the start and after the end of the recording.
EGO_POSE_MARGIN_S = 0.5


def _ego_trajectory(seconds: float, t0_ns: int) -> tuple[Trajectory, npt.NDArray[np.float64]]:
    """``world_from_ego`` at 200 Hz from −0.5 s to ``seconds`` + 0.5 s.

    The ego frame origin is on the ground below the rear axle (as in nuScenes). Heading follows
    the road plus the lateral drift ``d(t) = −1.75 + 0.15 sin(0.3 t)``; pitch and roll follow the
    ground slope (sampled under the axles, wheelbase 2.8 m, track 1.6 m) plus a suspension
    oscillation of 0.3° pitch at 1.3 Hz and 0.2° roll at 0.9 Hz; z rises 2 cm over the ground
    with the same pitch oscillation.
    """
    n = round((seconds + 2 * EGO_POSE_MARGIN_S) * EGO_POSE_RATE_HZ) + 1
    step_ns = 1_000_000_000 // EGO_POSE_RATE_HZ
    t_ns = t0_ns - int(EGO_POSE_MARGIN_S * 1e9) + step_ns * np.arange(n, dtype=np.int64)
    t = (t_ns - t0_ns) / 1e9
    s = _ego_s(t)
    d = EGO_LANE_D + 0.15 * np.sin(0.3 * t)
    dd_ds = 0.15 * 0.3 * np.cos(0.3 * t) / _ego_speed(t)
    transforms = []
    for si, di, slope in zip(s, d, dd_ds, strict=True):
        x, y, heading = road_point(float(si), float(di), ROAD_PARAMS)
        yaw = heading + float(np.arctan(slope))
        c, sn = np.cos(yaw), np.sin(yaw)
        z_rear = ground_height(x, y, ROAD_PARAMS)
        z_front = ground_height(x + 2.8 * c, y + 2.8 * sn, ROAD_PARAMS)
        z_left = ground_height(x - 0.8 * sn + 1.4 * c, y + 0.8 * c + 1.4 * sn, ROAD_PARAMS)
        z_right = ground_height(x + 0.8 * sn + 1.4 * c, y - 0.8 * c + 1.4 * sn, ROAD_PARAMS)
        transforms.append(
            (
                x,
                y,
                z_rear,
                yaw,
                -np.arctan2(z_front - z_rear, 2.8),
                np.arctan2(z_left - z_right, 1.6),
            )
        )
    arr = np.array(transforms)
    pitch = arr[:, 4] + np.deg2rad(0.3) * np.sin(2 * np.pi * 1.3 * t)
    roll = arr[:, 5] + np.deg2rad(0.2) * np.sin(2 * np.pi * 0.9 * t + 1.0)
    z = arr[:, 2] + 0.02 * np.sin(2 * np.pi * 1.3 * t)
    tfs = [
        Transform.from_euler_zyx(
            float(arr[i, 3]), float(pitch[i]), float(roll[i]), (arr[i, 0], arr[i, 1], z[i])
        )
        for i in range(n)
    ]
    return Trajectory.from_transforms(t_ns, tfs, "world_from_ego (truth)"), _ego_speed(t)
