"""Cameras, camera paths, the chunked renderer and video output."""
