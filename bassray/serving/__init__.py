"""Serving over HTTP: the Ray Serve app (``bassray.serving.app:build_app``), its batched generator,
request checks, access keys, stats, the launcher behind ``bassray serve`` and the registry resolver."""
