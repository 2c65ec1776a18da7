"""Moved to :mod:`pnerf_fast.geometry.rig` (the renderer's paths and photo alignment use
the rig too, so it lives below them all); this name is kept so that
``from pnerf_fast.data import rig`` still works."""
from ..geometry.rig import (DISTANCE, FOV_Y_DEG, NUM_VIEWS, PITCH_RANGE_DEG, YAW_RANGE_DEG, camera_at,
                            frontal_camera, rig_angles, rig_cameras)

__all__ = ["DISTANCE", "FOV_Y_DEG", "NUM_VIEWS", "PITCH_RANGE_DEG", "YAW_RANGE_DEG", "camera_at",
           "frontal_camera", "rig_angles", "rig_cameras"]
