"""Moved to :mod:`pnerf_fast.geometry.cameras` (the layer data, face and render all stand
on); this name is kept so that ``from pnerf_fast.render.cameras import Camera`` still works."""
from ..geometry.cameras import Camera, focal_from_fov, look_at, pixel_rays

__all__ = ["Camera", "focal_from_fov", "look_at", "pixel_rays"]
