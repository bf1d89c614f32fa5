"""Where runs, bundles, logs and the local MLflow store live (no Ray import: the CLI needs it
before Ray's logging is configured)."""
from __future__ import annotations

import os
from pathlib import Path


def bassray_home(root: str | Path | None = None) -> Path:
    """``--root``, ``$BASSRAY_HOME`` or ``~/bassray``, created. Absolute, because ``ray job submit``
    runs the driver in a temporary folder."""
    path = Path(root or os.environ.get("BASSRAY_HOME") or Path.home() / "bassray").expanduser()
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
