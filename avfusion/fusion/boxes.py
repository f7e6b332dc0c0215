"""3D boxes into any camera: corners, near-plane-clipped edges, the 2D box of the visible part.

``project_boxes(boxes, camera_from_box_frame, camera)`` takes ``Boxes3D`` in any frame and the
transform from that frame to a camera (x right, y down, z forward) and returns a
``BoxProjection`` aligned with the boxes (nothing is dropped; what cannot be seen is NaN and
flagged):

* ``corners_uv_px`` (N, 8, 2): the 8 corners (order of ``Boxes3D.corners``), NaN for corners in
  front of no image (at or behind the near plane, or outside the lens model's valid range);
* ``edges_uv_px`` (N, 12, S, 2): each of the 12 edges (``BOX_EDGES``) **clipped at the near plane**
  ``z = near_m`` in the camera frame *before* projection (projecting a corner behind the camera
  would mirror it through the image centre; clipping first is what makes boxes that reach
  behind the camera draw correctly), then cut to the camera's field of view and sampled at S
  points. With lens distortion a straight 3D edge is a curve in the image, so it is sampled
  densely (``samples_per_edge``, default 2 for a pinhole camera, whose image of an edge is
  straight, and 32 for a distorted lens). The samples are spread evenly in ideal normalised
  coordinates (x/z, y/z), where the clipped 3D edge is a straight segment, over the part that
  lies inside the bounding rectangle of the field of view (the undistorted image border), so
  they stay dense in the image however close to the camera the edge ends. NaN where an edge
  has no such part (``edge_visible`` False);
* ``xyxy`` (N, 4): the axis-aligned 2D box ``[x0, y0, x1, y1]`` of the part of the box's
  silhouette that lies inside the image, in pixel-edge coordinates (the image spans
  ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``; a box around pixel columns c0..c1 is
  ``[c0 - 0.5, c1 + 0.5]``, as ``avfusion_box2d.json`` of the synthetic logs). NaN where nothing
  of the box is in the image;
* ``visible`` (N,): some part of the box (in front of the near plane) lies in the image;
  ``visible_fraction`` (N,): the fraction of the box's volume in front of the near plane and
  inside the image (a ``fraction_grid``³ grid of cell centres); geometric only, no occlusion.

How ``xyxy`` is computed exactly. The silhouette S of a convex box, clipped at the near plane,
is bounded by the projections of its clipped edges and of the near-plane "cap" (where the plane
cuts the faces); the lens maps boundaries to boundaries, so this holds with distortion too. The
box of S ∩ image is therefore spanned by (a) the parts of those boundary curves inside the image
(each sampled polyline is clipped to the image rectangle, Liang-Barsky, so the points where a
curve leaves the image count), and (b) the image corners that lie inside S (the corner pixel's
viewing ray, from ``CameraModel.rays``, hits the clipped box). Clipping the box of the whole
silhouette to the image instead would be wrong for slanted silhouettes that leave the image.
Checked against casting a ray through every quarter pixel (pinhole and radtan lenses, boxes
cut by the near plane): the result contains every hit and exceeds it by less than 1 px.
Samples where the lens model is not valid (beyond its monotonic range, far outside any sane
image) are dropped, with the polyline segments that touch them.

``project_boxes_into_image`` is the frame-level entry: world-frame boxes (as ``Frame.boxes3d``)
into one image, with the camera's pose at its own capture time (motion-compensated: the pose of
the image, or ``poses`` at its stamp plus the sensor's clock offset) and, optionally, each box
moved along its velocity from the label time to the camera time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.motion import ego_pose_at_stamp
from avfusion.calibration.timesync import int_ns
from avfusion.calibration.transforms import Trajectory, Transform
from avfusion.errors import AVFusionError, CalibrationError, SyncError
from avfusion.types import Boxes2D, Boxes3D, Image

__all__ = [
    "BOX_EDGES",
    "BoxProjection",
    "camera_from_world",
    "project_boxes",
    "project_boxes_into_image",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: The 12 edges as pairs of corner indices (corner order of ``Boxes3D.corners``: the four at +x
#: then the four at -x, each group (+y +z, -y +z, -y -z, +y -z)): front ring, back ring, then the
#: four edges joining them.
BOX_EDGES: npt.NDArray[np.int64] = np.array(
    [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]],
    dtype=np.int64,
)  # fmt: skip
#: The 6 faces as the indices (into ``BOX_EDGES``) of their four edges: +x, -x, +y, -y, +z, -z.
_FACE_EDGES = np.array(
    [[0, 1, 2, 3], [4, 5, 6, 7], [3, 11, 7, 8], [1, 10, 5, 9], [0, 9, 4, 8], [2, 10, 6, 11]],
    dtype=np.int64,
)
#: Default samples per edge for a distorted lens (a pinhole camera needs only the two ends).
DISTORTED_SAMPLES_PER_EDGE = 32


@dataclass(frozen=True, eq=False)
class BoxProjection:
    """N boxes projected into one camera; every array is aligned with the boxes.

    See the module docstring for the meaning of each field. ``edge_visible`` (N, 12) says which
    edges keep a part in front of the near plane and inside the field of view's rectangle (so
    have samples in ``edges_uv_px``; the part may still be off the image); ``in_front`` (N,)
    whether any part of the box is in front of the near plane. ``corners_depth_m`` (N, 8) is
    each corner's z in the camera frame (also behind it).
    """

    corners_uv_px: F64
    corners_depth_m: F64
    corners_in_image: npt.NDArray[np.bool_]
    edges_uv_px: F64
    edge_visible: npt.NDArray[np.bool_]
    xyxy: F64
    visible: npt.NDArray[np.bool_]
    visible_fraction: F64
    in_front: npt.NDArray[np.bool_]
    camera_from_box_frame: Transform
    camera_model: CameraModel
    near_m: float
    camera: str = ""

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def to_boxes2d(self, boxes: Boxes3D, sensor: str | None = None) -> Boxes2D:
        """The visible boxes as ``Boxes2D`` (label and track id from ``boxes``).

        Only visible boxes have a 2D box; ``attrs["box_index"]`` gives each one's index in
        ``boxes`` (and in this projection), so nothing is lost without a trace.
        """
        if len(boxes) != len(self):
            raise AVFusionError(
                f"BoxProjection.to_boxes2d: {len(boxes)} boxes given for a projection of {len(self)}"
            )
        idx = np.flatnonzero(self.visible)
        attrs: dict[str, npt.NDArray[Any]] = {
            "box_index": idx,
            "visible_fraction": self.visible_fraction[idx],
        }
        if boxes.token is not None:
            attrs["token"] = boxes.token[idx]
        return Boxes2D(
            self.xyxy[idx], boxes.label[idx], boxes.track_id[idx], sensor or self.camera, attrs
        )


# --------------------------------------------------------------------------------------------
# Geometry helpers (vectorised numpy)
# --------------------------------------------------------------------------------------------


def _project_valid(
    camera: CameraModel, pts: F64, min_depth_m: float
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Pixels of camera-frame points (..., 3) and where they are valid: in front of
    ``min_depth_m``, finite, and inside the lens model's valid range (may be outside the image)."""
    flat = pts.reshape(-1, 3)
    uv, depth, _ = camera.project(flat, min_depth_m=min_depth_m)
    ok = np.isfinite(uv).all(axis=1)
    safe = np.where(ok, depth, 1.0)
    _, _, in_model = camera.distort_normalised(
        np.where(ok, flat[:, 0] / safe, 0.0), np.where(ok, flat[:, 1] / safe, 0.0)
    )
    ok &= in_model
    uv[~ok] = np.nan
    return uv.reshape(*pts.shape[:-1], 2), ok.reshape(pts.shape[:-1])


def _field_of_view(camera: CameraModel) -> tuple[float, float, float, float]:
    """Bounding rectangle (x0, y0, x1, y1), in ideal normalised coordinates, of what the image
    sees: the undistorted image border, sampled densely (the lens maps border to border)."""
    w, h = camera.width - 0.5, camera.height - 0.5
    t = np.linspace(0.0, 1.0, 257)
    border = np.concatenate(
        [
            np.column_stack([-0.5 + t * (w + 0.5), np.full_like(t, -0.5)]),
            np.column_stack([-0.5 + t * (w + 0.5), np.full_like(t, h)]),
            np.column_stack([np.full_like(t, -0.5), -0.5 + t * (h + 0.5)]),
            np.column_stack([np.full_like(t, w), -0.5 + t * (h + 0.5)]),
        ]
    )
    x, y = camera.pixels_to_normalised(border)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):  # pragma: no cover - wild lens
        return (-np.inf, -np.inf, np.inf, np.inf)
    pad = 1e-6 * (1.0 + max(np.abs(x).max(), np.abs(y).max()))
    return (x.min() - pad, y.min() - pad, x.max() + pad, y.max() + pad)


def _pixels_of_normalised(camera: CameraModel, norm: F64) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Pixels of ideal normalised points (..., 2) and where the lens model is valid for them."""
    x = norm[..., 0].reshape(-1)
    y = norm[..., 1].reshape(-1)
    finite = np.isfinite(x) & np.isfinite(y)
    x = np.where(finite, x, 0.0)
    y = np.where(finite, y, 0.0)
    xd, yd, ok = camera.distort_normalised(x, y)
    k = camera.K
    uv = np.stack([k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]], axis=1)
    ok = ok & finite
    uv[~ok] = np.nan
    return uv.reshape(*norm.shape[:-1], 2), ok.reshape(norm.shape[:-1])


def _clip_polylines(
    p0: F64, p1: F64, ok: npt.NDArray[np.bool_], rect: tuple[float, float, float, float]
) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """Liang-Barsky: segments ``p0 -> p1`` (..., 2) clipped to ``rect`` (x0, y0, x1, y1).

    Returns the clipped ends and a mask of segments that keep a part inside (``ok`` false
    segments never do). Inputs are not modified.
    """
    x0, y0, x1, y1 = rect
    d = p1 - p0
    t_lo = np.zeros(p0.shape[:-1])
    t_hi = np.ones(p0.shape[:-1])
    keep = ok.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, lo, hi in ((0, x0, x1), (1, y0, y1)):
            q = np.nan_to_num(p0[..., axis])
            dd = np.nan_to_num(d[..., axis])
            flat = dd == 0.0
            keep &= ~(flat & ((q < lo) | (q > hi)))
            ta = (lo - q) / dd
            tb = (hi - q) / dd
            t_enter = np.where(flat, -np.inf, np.minimum(ta, tb))
            t_exit = np.where(flat, np.inf, np.maximum(ta, tb))
            t_lo = np.maximum(t_lo, t_enter)
            t_hi = np.minimum(t_hi, t_exit)
    keep &= t_lo <= t_hi
    a = p0 + d * t_lo[..., None]
    b = p0 + d * t_hi[..., None]
    return a, b, keep


def _rays_hit_boxes(
    rays: F64, rot: F64, center: F64, half: F64, near_m: float
) -> npt.NDArray[np.bool_]:
    """Whether rays from the camera origin (R, 3) hit each box (N) at some z >= near_m.

    ``rot`` (N, 3, 3) camera_from_box rotations, ``center`` (N, 3) camera frame, ``half`` (N, 3).
    Returns (N, R). Slab test in each box's own frame.
    """
    o_local = np.einsum("nji,nj->ni", rot, -center)  # (N, 3)
    d_local = np.einsum("nji,rj->nri", rot, rays)  # (N, R, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d_local
        ta = (-half[:, None, :] - o_local[:, None, :]) * inv
        tb = (half[:, None, :] - o_local[:, None, :]) * inv
    parallel = d_local == 0.0
    outside_slab = (np.abs(o_local)[:, None, :] > half[:, None, :]) & parallel
    t_enter = np.where(parallel, -np.inf, np.minimum(ta, tb)).max(axis=2)
    t_exit = np.where(parallel, np.inf, np.maximum(ta, tb)).min(axis=2)
    dz = rays[None, :, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_near = np.where(dz > 0, near_m / np.where(dz > 0, dz, 1.0), np.inf)
    start = np.maximum(np.maximum(t_enter, 0.0), t_near)
    return ~outside_slab.any(axis=2) & (start <= t_exit)


# --------------------------------------------------------------------------------------------
# project_boxes
# --------------------------------------------------------------------------------------------


def project_boxes(
    boxes: Boxes3D,
    camera_from_box_frame: Transform,
    camera: CameraModel,
    *,
    near_m: float = 0.1,
    samples_per_edge: int | None = None,
    fraction_grid: int = 5,
    camera_name: str = "",
) -> BoxProjection:
    """Project ``boxes`` (in the frame ``camera_from_box_frame`` maps from) into ``camera``.

    ``near_m`` > 0 is the near plane (camera z) at which edges are clipped; ``samples_per_edge``
    (>= 2) how many points each clipped edge is sampled at (default 2 for a pinhole camera,
    ``DISTORTED_SAMPLES_PER_EDGE`` with distortion); ``fraction_grid`` (>= 1) the grid per axis
    of ``visible_fraction``. Returns a ``BoxProjection``; the inputs are not modified.
    """
    where = f"project_boxes into '{camera_name or 'camera'}'"
    if not isinstance(boxes, Boxes3D):
        raise AVFusionError(f"{where}: boxes must be Boxes3D, got {type(boxes).__name__}")
    if not isinstance(camera_from_box_frame, Transform):
        raise CalibrationError(
            f"{where}: camera_from_box_frame must be a Transform, got {type(camera_from_box_frame).__name__}"
        )
    if not isinstance(camera, CameraModel):
        raise CalibrationError(
            f"{where}: camera must be a CameraModel, got {type(camera).__name__}"
        )
    if not (np.isfinite(near_m) and near_m > 0):
        raise AVFusionError(f"{where}: near_m must be a positive number of metres, got {near_m}")
    n_samples = (
        (2 if camera.distortion == "none" else DISTORTED_SAMPLES_PER_EDGE)
        if samples_per_edge is None
        else samples_per_edge
    )
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 2:
        raise AVFusionError(
            f"{where}: samples_per_edge must be an integer >= 2, got {samples_per_edge!r}"
        )
    if (
        isinstance(fraction_grid, bool)
        or not isinstance(fraction_grid, int | np.integer)
        or fraction_grid < 1
    ):
        raise AVFusionError(
            f"{where}: fraction_grid must be an integer >= 1, got {fraction_grid!r}"
        )
    near = float(near_m)
    n = len(boxes)
    s = int(n_samples)
    if n == 0:
        return _empty_projection(camera_from_box_frame, camera, near, s, camera_name)

    corners = np.asarray(
        camera_from_box_frame.apply(boxes.corners().reshape(-1, 3)), dtype=np.float64
    ).reshape(n, 8, 3)
    depth = corners[..., 2].copy()
    corners_uv, corners_ok = _project_valid(camera, corners, near)
    corners_uv[~corners_ok] = np.nan
    rect = (-0.5, -0.5, camera.width - 0.5, camera.height - 0.5)
    in_rect = (
        corners_ok
        & (corners_uv[..., 0] >= rect[0])
        & (corners_uv[..., 0] < rect[2])
        & (corners_uv[..., 1] >= rect[1])
        & (corners_uv[..., 1] < rect[3])
    )

    # Edges clipped at z = near (a corner exactly on the plane counts as in front).
    a = corners[:, BOX_EDGES[:, 0]]  # (N, 12, 3)
    b = corners[:, BOX_EDGES[:, 1]]
    fa = a[..., 2] >= near
    fb = b[..., 2] >= near
    crosses = fa != fb
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crosses, (near - a[..., 2]) / (b[..., 2] - a[..., 2]), 0.0)
    x_pt = a + (b - a) * t[..., None]
    x_pt[..., 2] = np.where(crosses, near, x_pt[..., 2])  # exactly on the plane
    edge_start = np.where((fa | ~crosses)[..., None], a, x_pt)
    edge_end = np.where((fb | ~crosses)[..., None], b, x_pt)
    edge_in_front = fa | fb

    # Near-plane cap: on each face, the segment between the two edges that cross the plane.
    face_cross = crosses[:, _FACE_EDGES]  # (N, 6, 4)
    cap_ok = face_cross.sum(axis=2) == 2
    order = np.argsort(~face_cross, axis=2, kind="stable")[..., :2]  # the crossing edges first
    cap_edges = np.take_along_axis(np.broadcast_to(_FACE_EDGES, (n, 6, 4)), order, axis=2)
    rows = np.arange(n)[:, None]
    cap_start = x_pt[rows, cap_edges[..., 0]]
    cap_end = x_pt[rows, cap_edges[..., 1]]

    seg_start = np.concatenate([edge_start, cap_start], axis=1)  # (N, 18, 3)
    seg_end = np.concatenate([edge_end, cap_end], axis=1)
    seg_ok = np.concatenate([edge_in_front, cap_ok], axis=1)
    # A 3D segment in front of the camera is a straight segment in ideal normalised coordinates
    # (x/z, y/z). Clip it there to the field of view's bounding rectangle (nothing outside can
    # reach the image), then sample the clipped part evenly: the samples are spread evenly
    # over what the lens maps into the image, however close to the camera the segment ends.
    with np.errstate(divide="ignore", invalid="ignore"):
        n0 = seg_start[..., :2] / seg_start[..., 2:3]
        n1 = seg_end[..., :2] / seg_end[..., 2:3]
    n0, n1, seg_in_view = _clip_polylines(n0, n1, seg_ok, _field_of_view(camera))
    alpha = np.linspace(0.0, 1.0, s)
    norm = n0[:, :, None, :] + (n1 - n0)[:, :, None, :] * alpha[:, None]
    uv, ok = _pixels_of_normalised(camera, norm)
    ok &= seg_in_view[..., None]
    uv[~ok] = np.nan

    # 2D box of S ∩ image: boundary polylines clipped to the image, plus the image corners
    # inside the silhouette.
    c0, c1, keep = _clip_polylines(uv[:, :, :-1], uv[:, :, 1:], ok[:, :, :-1] & ok[:, :, 1:], rect)
    # Single valid samples (neighbours invalid) still count when inside the image.
    inside = (
        ok
        & (uv[..., 0] >= rect[0])
        & (uv[..., 0] <= rect[2])
        & (uv[..., 1] >= rect[1])
        & (uv[..., 1] <= rect[3])
    )
    pts = np.concatenate(
        [
            np.where(keep[..., None], c0, np.nan).reshape(n, -1, 2),
            np.where(keep[..., None], c1, np.nan).reshape(n, -1, 2),
            np.where(inside[..., None], uv, np.nan).reshape(n, -1, 2),
        ],
        axis=1,
    )
    image_corners = np.array(
        [[rect[0], rect[1]], [rect[2], rect[1]], [rect[2], rect[3]], [rect[0], rect[3]]]
    )
    if n:
        rays = camera.rays(image_corners)
        rot_cb = np.einsum("ij,njk->nik", camera_from_box_frame.rotation, boxes.rotation_matrices())
        center_c = np.asarray(camera_from_box_frame.apply(boxes.center), dtype=np.float64)
        hit = _rays_hit_boxes(rays, rot_cb, center_c, boxes.size / 2.0, near)
        hit &= np.all(np.isfinite(rays), axis=1)[None, :]
        corner_pts = np.where(hit[..., None], image_corners[None], np.nan)
        pts = np.concatenate([pts, corner_pts], axis=1)
    visible = np.isfinite(pts).all(axis=2).any(axis=1)
    xyxy = np.full((n, 4), np.nan)
    if visible.any():
        with np.errstate(all="ignore"):
            v = pts[visible]
            xyxy[visible] = np.stack(
                [
                    np.nanmin(v[..., 0], axis=1),
                    np.nanmin(v[..., 1], axis=1),
                    np.nanmax(v[..., 0], axis=1),
                    np.nanmax(v[..., 1], axis=1),
                ],
                axis=1,
            )
        xyxy[visible] = np.clip(xyxy[visible], [rect[0], rect[1]] * 2, [rect[2], rect[3]] * 2)

    # Visible fraction of the volume: grid of cell centres in each box.
    g = int(fraction_grid)
    cell = (np.arange(g) + 0.5) / g - 0.5
    grid = np.stack(np.meshgrid(cell, cell, cell, indexing="ij"), axis=-1).reshape(-1, 3)
    if n:
        local = grid[None] * boxes.size[:, None, :]
        frame_pts = (
            np.einsum("nij,nkj->nki", boxes.rotation_matrices(), local) + boxes.center[:, None]
        )
        cam_pts = np.asarray(
            camera_from_box_frame.apply(frame_pts.reshape(-1, 3)), dtype=np.float64
        )
        _, _, in_img = camera.project(cam_pts, min_depth_m=near)
        fraction = in_img.reshape(n, -1).mean(axis=1)
    else:
        fraction = np.zeros(0)

    edges_uv = uv[:, :12].copy()
    edge_visible = np.any(ok[:, :12], axis=2)
    logger.debug(
        "%s: %d boxes, %d visible, %d reaching behind the near plane",
        where,
        n,
        int(visible.sum()),
        int((depth < near).any(axis=1).sum()),
    )
    return BoxProjection(
        corners_uv_px=corners_uv,
        corners_depth_m=depth,
        corners_in_image=in_rect,
        edges_uv_px=edges_uv,
        edge_visible=edge_visible,
        xyxy=xyxy,
        visible=visible,
        visible_fraction=fraction,
        in_front=np.any(edge_in_front, axis=1),
        camera_from_box_frame=camera_from_box_frame,
        camera_model=camera,
        near_m=near,
        camera=camera_name,
    )


def _empty_projection(
    camera_from_box_frame: Transform, camera: CameraModel, near: float, s: int, name: str
) -> BoxProjection:
    return BoxProjection(
        corners_uv_px=np.zeros((0, 8, 2)),
        corners_depth_m=np.zeros((0, 8)),
        corners_in_image=np.zeros((0, 8), dtype=bool),
        edges_uv_px=np.zeros((0, 12, s, 2)),
        edge_visible=np.zeros((0, 12), dtype=bool),
        xyxy=np.zeros((0, 4)),
        visible=np.zeros(0, dtype=bool),
        visible_fraction=np.zeros(0),
        in_front=np.zeros(0, dtype=bool),
        camera_from_box_frame=camera_from_box_frame,
        camera_model=camera,
        near_m=near,
        camera=name,
    )


# --------------------------------------------------------------------------------------------
# Frame level: world boxes into one image
# --------------------------------------------------------------------------------------------


def camera_from_world(
    image: Image, poses: Trajectory | None = None, *, tolerance_ns: int = 0
) -> Transform:
    """``camera_from_world`` at the image's capture: ``cam_from_ego · ego_from_world(t_cam)``.

    Uses the image's stored ``world_from_ego`` when it has one (as ``calibration.motion`` does);
    otherwise ``poses`` at the image stamp plus the sensor's ``time_offset_ns``. To apply a
    corrected clock offset, give an image whose sensor carries it and no stored pose
    (``dataclasses.replace(image, sensor=..., world_from_ego=None)``).
    """
    if image.world_from_ego is not None:
        world_from_ego = image.world_from_ego
    elif poses is not None:
        world_from_ego = ego_pose_at_stamp(
            poses, image.sensor, image.t_ns, tolerance_ns=tolerance_ns
        )
    else:
        token = f" (token {image.token})" if image.token else ""
        raise SyncError(
            f"image of '{image.sensor.name}' at t={image.t_ns}{token} carries no world_from_ego "
            "and no pose track was given"
        )
    return (world_from_ego @ image.sensor.ego_from_sensor).inverse()


def project_boxes_into_image(
    boxes: Boxes3D,
    image: Image,
    poses: Trajectory | None = None,
    *,
    boxes_t_ns: int | None = None,
    object_motion: bool = True,
    tolerance_ns: int = 0,
    near_m: float = 0.1,
    samples_per_edge: int | None = None,
    fraction_grid: int = 5,
) -> BoxProjection:
    """World-frame ``boxes`` (e.g. ``frame.boxes3d``) projected into ``image``'s camera.

    The camera pose is the one at the image's own capture time (see ``camera_from_world``).
    When ``object_motion`` and ``boxes_t_ns`` (the labels' time on the ego clock, e.g. the
    keyframe LiDAR time ``frame.t_ns``) are given, each box with a finite velocity is moved by
    ``velocity · (t_camera - boxes_t_ns)``, ``t_camera = image.t_ns + time_offset_ns``; boxes with
    unknown (NaN) velocity stay where they are and are counted in the debug log.
    """
    where = f"project_boxes_into_image '{image.sensor.name}'"
    if boxes.frame != "world":
        raise CalibrationError(
            f"{where}: boxes are in frame '{boxes.frame}'; expected 'world' (use project_boxes "
            "with an explicit camera_from_box_frame for other frames)"
        )
    cam_from_world = camera_from_world(image, poses, tolerance_ns=tolerance_ns)
    moved = boxes
    if object_motion and boxes_t_ns is not None and len(boxes):
        t_box = int_ns(boxes_t_ns, f"{where}: boxes_t_ns")
        dt_s = (image.t_ns + image.sensor.time_offset_ns - t_box) * 1e-9
        vel = boxes.velocity if boxes.velocity is not None else np.full((len(boxes), 3), np.nan)
        known = np.all(np.isfinite(vel), axis=1)
        center = boxes.center + np.where(known[:, None], vel, 0.0) * dt_s
        moved = Boxes3D(
            center,
            boxes.size,
            boxes.rotation,
            boxes.label,
            boxes.track_id,
            boxes.frame,
            boxes.velocity,
            boxes.token,
            boxes.attrs,
        )
        logger.debug(
            "%s: moved %d boxes by their velocity over %.1f ms; %d without velocity stay",
            where,
            int(known.sum()),
            dt_s * 1e3,
            int((~known).sum()),
        )
    return project_boxes(
        moved,
        cam_from_world,
        image.camera,
        near_m=near_m,
        samples_per_edge=samples_per_edge,
        fraction_grid=fraction_grid,
        camera_name=image.sensor.name,
    )
