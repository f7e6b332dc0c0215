"""Readers and writers: every on-disk format becomes the same ``Log``."""

from avfusion.io.calibration_file import (
    SensorCalibration,
    calibration_record,
    read_calibration,
    write_calibration,
)
from avfusion.io.kitti import (
    KittiCalibration,
    KittiObjectLog,
    KittiRawLog,
    open_kitti,
    read_kitti_labels,
    read_kitti_object_calib,
    read_kitti_raw_calib,
    read_kitti_timestamps,
    read_velodyne_bin,
)
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
from avfusion.io.pointcloud2 import (
    DecodedCloud,
    camera_model_from_camera_info,
    decode_compressed_image,
    decode_image,
    decode_pointcloud2,
    decode_pointcloud2_raw,
)
from avfusion.io.registry import FORMATS, detect_format, open_log
from avfusion.io.rig import Rig, RigSensor, load_rig
from avfusion.io.rosbag import BagInfo, BagLog, inspect_bag, open_bag, suggest_rig

__all__ = [
    "FORMATS",
    "NUSCENES_RADAR_FIELDS",
    "BagInfo",
    "BagLog",
    "DecodedCloud",
    "KittiCalibration",
    "KittiObjectLog",
    "KittiRawLog",
    "NuScenesLog",
    "PcdHeader",
    "PcdInfo",
    "RadarFilterResult",
    "Rig",
    "RigSensor",
    "SensorCalibration",
    "calibration_record",
    "camera_model_from_camera_info",
    "decode_compressed_image",
    "decode_image",
    "decode_pointcloud2",
    "decode_pointcloud2_raw",
    "detect_format",
    "find_nuscenes_tables",
    "inspect_bag",
    "load_rig",
    "lzf_compress",
    "lzf_decompress",
    "open_bag",
    "open_kitti",
    "open_log",
    "radar_filter",
    "read_calibration",
    "read_kitti_labels",
    "read_kitti_object_calib",
    "read_kitti_raw_calib",
    "read_kitti_timestamps",
    "read_lidar_bin",
    "read_pcd",
    "read_pcd_info",
    "read_velodyne_bin",
    "suggest_rig",
    "write_calibration",
    "write_pcd",
]
