"""Readers and writers: every on-disk format becomes the same ``Log``."""

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

__all__ = [
    "NUSCENES_RADAR_FIELDS",
    "PcdHeader",
    "PcdInfo",
    "RadarFilterResult",
    "lzf_compress",
    "lzf_decompress",
    "radar_filter",
    "read_pcd",
    "read_pcd_info",
    "write_pcd",
]
