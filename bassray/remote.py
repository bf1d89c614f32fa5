"""Paths that may be URIs (s3://, gs://, hdfs://, file://): one place that tells them from local
paths and opens them through pyarrow's filesystems (shards, bundles, artifact stores)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, path inside it)`` for ``uri``; credentials come from the usual
    environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...)."""
    import pyarrow.fs as pafs
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise FileNotFoundError(f"cannot open {uri}: {exc}") from exc
