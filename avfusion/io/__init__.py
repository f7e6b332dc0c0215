"""Readers and writers: every on-disk format becomes the same ``Log``."""

from avfusion.io.nuscenes import NuScenesLog, find_nuscenes_tables, read_lidar_bin
from avfusion.io.pcd import (
    NUSCENES_RADAR_FIELDS,
    PcdHeader,
    PcdInfo,
    RadarFilterResult,
    lzf_compress,
    lzf_decompress,
    radar_filter,
    read_pcd,
    read_pcd_info,
    write_pcd,
)
from avfusion.io.registry import FORMATS, detect_format, open_log

__all__ = [
    "FORMATS",
    "NUSCENES_RADAR_FIELDS",
    "NuScenesLog",
    "PcdHeader",
    "PcdInfo",
    "RadarFilterResult",
    "detect_format",
    "find_nuscenes_tables",
    "lzf_compress",
    "lzf_decompress",
    "open_log",
    "radar_filter",
    "read_lidar_bin",
    "read_pcd",
    "read_pcd_info",
    "write_pcd",
]
