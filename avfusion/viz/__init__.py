"""Visualisation: overlays, BEV, occupancy renders, the HTML QA report and rerun export.

Renderers return new uint8 RGB arrays and never write files; :mod:`.report` writes the HTML
report and :mod:`.rerun` the rerun recording.
"""

from avfusion.viz.bev import render_bev, render_montage
from avfusion.viz.colors import OCC3D_COLORS, category_colors, depth_colors, severity_color
from avfusion.viz.occupancy_render import (
    occupancy_legend,
    render_height_slices,
    render_isometric,
    render_topdown,
    render_visibility,
)
from avfusion.viz.overlay import render_calibration_check, render_camera_overlay
from avfusion.viz.plots import encode_png, render_sync_plot
from avfusion.viz.report import build_report, load_findings
from avfusion.viz.rerun import export_rerun

__all__ = [
    "OCC3D_COLORS",
    "build_report",
    "category_colors",
    "depth_colors",
    "encode_png",
    "export_rerun",
    "load_findings",
    "occupancy_legend",
    "render_bev",
    "render_calibration_check",
    "render_camera_overlay",
    "render_height_slices",
    "render_isometric",
    "render_montage",
    "render_sync_plot",
    "render_topdown",
    "render_visibility",
    "severity_color",
]
