"""Models in the MLflow registry as serving sources: ``models:/NAME/VERSION``, ``models:/NAME/latest``
and ``models:/NAME@ALIAS``. The one resolver behind ``bassray serve``, ``serve run`` and a RayService."""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[A-Za-z0-9_-]+))$")
FORMS = "models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS"


def is_model_uri(source: str | None) -> bool:
    return bool(source) and str(source).startswith("models:/")


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the local store under $BASSRAY_HOME (where training registers)."""
    from bassray.distributed.tracking import default_tracking_uri as home_store
    from bassray.home import bassray_home
    return os.environ.get("MLFLOW_TRACKING_URI") or home_store(bassray_home())


@dataclass(frozen=True)
class RegisteredBundle:
    bundle: str          # local folder holding the version's bundle
    model: str
    model_version: str
    run_id: str

    @property
    def pinned_uri(self) -> str:
        """The exact version, so every replica serves the same one even if an alias moves."""
        return f"models:/{self.model}/{self.model_version}"


def resolve_model_uri(uri: str, tracking_uri: str | None, cache_dir: str | Path) -> RegisteredBundle:
    """The registered version's bundle artifacts, downloaded once into ``cache_dir/NAME/VERSION``
    through the tracking server; complete or absent, so a killed download is never served."""
    import mlflow
    match = MODEL_URI.match(uri)
    if match is None:
        raise ValueError(f"{uri!r} is not a registry URI: use {FORMS}")
    tracking_uri = tracking_uri or default_tracking_uri()
    name = match["name"]
    client = mlflow.MlflowClient(tracking_uri)
    try:
        if match["alias"]:
            found = client.get_model_version_by_alias(name, match["alias"])
        elif match["version"] == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ValueError(f"model {name!r} has no versions in {tracking_uri}")
            found = max(versions, key=lambda v: int(v.version))
        else:
            found = client.get_model_version(name, match["version"])
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"{uri} is not in the registry at {tracking_uri}: {exc.message} "
                         f"(list versions with `mlflow models` or the MLflow UI; --tracking-uri picks the "
                         f"server)") from exc
    target = Path(cache_dir) / name / str(found.version)
    if not (target / "bundle.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=found.source, dst_path=str(partial),
                                                              tracking_uri=tracking_uri))
        if not (downloaded / "bundle.json").exists():
            raise ValueError(f"{uri} (source {found.source}) holds no bundle.json")
        shutil.rmtree(target, ignore_errors=True)
        downloaded.rename(target)
        shutil.rmtree(partial, ignore_errors=True)
    log.info("%s is version %s (run %s), in %s", uri, found.version, found.run_id, target)
    return RegisteredBundle(str(target), name, str(found.version), found.run_id or "")
