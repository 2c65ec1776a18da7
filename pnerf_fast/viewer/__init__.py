"""``pnerf view``: an interactive web viewer of a finetuned portrait, built on viser.

- :mod:`.camera`: viser's client camera <-> :class:`~pnerf_fast.geometry.cameras.Camera`;
- :mod:`.keyframes`: recorded views -> a nerfstudio camera_path.json, and PNG snapshots;
- :mod:`.app`: the viser server, its GUI and the progressive render loop;
- :mod:`.headless`: open a viewer in headless Chromium and screenshot it (CI, docs, benchmarks).

viser is imported only by :mod:`.app` and when a viser camera is converted, so importing
this package stays cheap.
"""
