"""The leaf layer every other one stands on: cameras, the capture rig and the canonical box.

- ``cameras``: ``Camera`` (pinhole, OpenGL axes), ``pixel_rays``, ``look_at``, ``focal_from_fov``;
- ``rig``: the light-stage rig (distance, field of view, yaw and pitch ranges, its cameras),
  which the light stage renders from, photo alignment frames like, and render paths orbit in;
- ``box``: ``CANONICAL_AABB`` (the field config's default box) and ``grid_box`` (the
  occupancy grid's box over a field's box).

It imports nothing of pnerf_fast's (tests/test_layers.py checks).
"""
from .box import CANONICAL_AABB, grid_box, half_extent
from .cameras import Camera, focal_from_fov, look_at, pixel_rays

__all__ = ["CANONICAL_AABB", "Camera", "focal_from_fov", "grid_box", "half_extent", "look_at", "pixel_rays"]
