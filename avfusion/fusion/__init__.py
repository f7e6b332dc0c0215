"""Fusion layer: projection, aggregation, occupancy and label consistency (kernels in kernels.py)."""

# -- 3D boxes into cameras (boxes.py) and point painting / radar drawing (painting.py) --------
# -- occupancy ground truth (aggregate.py, occupancy.py) -------------------------------------
from avfusion.fusion.aggregate import AggregatedSweeps, AggregationOptions, aggregate_keyframe
from avfusion.fusion.boxes import (
    BOX_EDGES,
    BoxProjection,
    camera_from_world,
    project_boxes,
    project_boxes_into_image,
)
from avfusion.fusion.occupancy import (
    OccupancyGT,
    OccupancyJob,
    OccupancyMetrics,
    OccupancyOptions,
    OctoMapParams,
    confusion_matrix,
    evaluate_occupancy,
    log_odds,
    metrics_from_confusion,
    occupancy_for_sample,
)
from avfusion.fusion.painting import (
    CountsToKelvin,
    PaintResult,
    RadarProjection,
    TemperaturePaint,
    paint_colour,
    paint_temperature,
    project_radar,
    sample_image,
)

# -- point clouds into cameras, occlusion and depth maps (projection.py) ----------------------
from avfusion.fusion.projection import (
    OcclusionOptions,
    Projection,
    densify_depth,
    depth_map,
    project_cloud,
    project_cloud_to_cameras,
    project_points,
    project_to_all_cameras,
)

__all__ = [
    "BOX_EDGES",
    "AggregatedSweeps",
    "AggregationOptions",
    "BoxProjection",
    "CountsToKelvin",
    "OcclusionOptions",
    "OccupancyGT",
    "OccupancyJob",
    "OccupancyMetrics",
    "OccupancyOptions",
    "OctoMapParams",
    "PaintResult",
    "Projection",
    "RadarProjection",
    "TemperaturePaint",
    "aggregate_keyframe",
    "camera_from_world",
    "confusion_matrix",
    "densify_depth",
    "depth_map",
    "evaluate_occupancy",
    "log_odds",
    "metrics_from_confusion",
    "occupancy_for_sample",
    "paint_colour",
    "paint_temperature",
    "project_boxes",
    "project_boxes_into_image",
    "project_cloud",
    "project_cloud_to_cameras",
    "project_points",
    "project_radar",
    "project_to_all_cameras",
    "sample_image",
]
