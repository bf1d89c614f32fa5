"""Bundles on remote storage (s3://, gs://, hdfs://, file://): fetched once into a local cache, so
serving replicas on any node load the same bundle without a shared filesystem.

Any URI that ``pyarrow.fs.FileSystem.from_uri`` understands works (:mod:`bassray.remote`). A local
path is returned unchanged.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bassray.remote import filesystem, is_uri
from bassray.bundles.files import MANIFEST_FILE, BundleError

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("BASSRAY_BUNDLE_CACHE", Path.home() / ".cache" / "bassray" / "bundles"))


def open_remote_bundle(uri: str) -> tuple[Any, str, bytes]:
    """``(filesystem, root, manifest bytes)`` of the bundle at ``uri``; its manifest is written last,
    so reading it proves the bundle complete."""
    try:
        fs, root = filesystem(uri)
        with fs.open_input_stream(f"{root.rstrip('/')}/{MANIFEST_FILE}") as fh:
            return fs, root, fh.read()
    except (FileNotFoundError, OSError) as exc:
        raise BundleError(f"no bundle at {uri} ({MANIFEST_FILE} not readable: {exc}): upload the whole folder "
                          f"written by `bassray export` or a training job, and check the credentials") from exc


def local_bundle(bundle: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local folder holding ``bundle``: the path itself, or a cached copy of a remote bundle.

    The cache key is the URI plus the manifest's bytes, so a bundle re-exported to the same URI is
    fetched again. The copy lands in a temporary folder and is renamed into place when complete,
    so an interrupted fetch never leaves a half bundle behind."""
    if not is_uri(bundle):
        return Path(bundle)
    uri = str(bundle).rstrip("/")
    fs, root, manifest = open_remote_bundle(uri)
    key = hashlib.sha256(uri.encode() + b"\0" + manifest).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"{Path(root).name}-{key}"
    if (target / MANIFEST_FILE).exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    log.info("fetching bundle %s into %s", uri, target)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
    try:
        import pyarrow.fs as pafs
        pafs.copy_files(root, str(staging / "bundle"), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        try:
            (staging / "bundle").rename(target)
        except OSError:  # another process finished the same fetch first: use theirs
            if not (target / MANIFEST_FILE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
