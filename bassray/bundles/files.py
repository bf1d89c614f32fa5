"""The plain export format that inference and serving load: weights and config, never training state.

A bundle is a directory:
  config.json        the full bassray Config (bassray.config.save_config)
  bundle.json        {"format": "bassray-bundle", "format_version": 1, "kind": ..., "files": {...}, **metadata}
                     written last, so a directory without it is an incomplete export
  model.safetensors  the model's state dict
  extra.safetensors  optional named tensors (e.g. the diffusion bundle's latent statistics)
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bassray.config import Config, load_config_json, save_config

log = logging.getLogger(__name__)

FORMAT = "bassray-bundle"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MANIFEST_FILE = "bundle.json"
WEIGHTS_FILE = "model.safetensors"
EXTRA_FILE = "extra.safetensors"


class BundleError(RuntimeError):
    """A bundle directory that is missing, incomplete, or of the wrong kind."""


@dataclass
class BundleState:
    config: Config
    metadata: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def _plain_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses views sharing storage and non-contiguous tensors; copies are cheap here.
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}


def save_bundle(out_dir: str | Path, kind: str, config: Config, model: torch.nn.Module,
                metadata: dict[str, Any] | None = None,
                extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` (its state dict) and ``config`` as a bundle of ``kind`` to ``out_dir``.

    For ``kind="autoencoder"`` the metadata must name the stem (``{"stem": "mix"}`` or the target stem).
    Metadata values must be JSON-serialisable.
    """
    metadata = dict(metadata or {})
    reserved = {"format", "format_version", "kind", "files"} & set(metadata)
    if reserved:
        raise ValueError(f"metadata keys {sorted(reserved)} are reserved by the bundle format")
    if kind == "autoencoder":
        config.autoencoder_for(metadata.get("stem", "<missing>"))  # raises on an unknown stem kind
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # an interrupted overwrite must read as incomplete
    save_config(config, out / CONFIG_FILE)
    save_file(_plain_tensors(model.state_dict()), str(out / WEIGHTS_FILE))
    files = {"config": CONFIG_FILE, "weights": WEIGHTS_FILE}
    if extra_tensors:
        save_file(_plain_tensors(extra_tensors), str(out / EXTRA_FILE))
        files["extra_tensors"] = EXTRA_FILE
    else:
        (out / EXTRA_FILE).unlink(missing_ok=True)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "files": files,
                "parameters": sum(p.numel() for p in model.parameters()), **metadata}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    log.info("saved %s bundle to %s", kind, out)
    return out


def read_bundle_metadata(bundle_dir: str | Path) -> dict[str, Any]:
    """The bundle's ``bundle.json`` (kind, files, stem, step, ...), after checking the files exist."""
    path = Path(bundle_dir)
    if not path.is_dir():
        raise BundleError(f"no bundle directory at {path}: pass the folder that holds {MANIFEST_FILE}, "
                          f"{CONFIG_FILE} and {WEIGHTS_FILE} (from `bassray export` or a training run)")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.exists():
        raise BundleError(f"{path} is not a complete bundle: {MANIFEST_FILE} is missing (the export was "
                          f"interrupted or this is a training checkpoint); export it again")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc}); export the bundle again") from exc
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path} is not a {FORMAT} manifest (format={manifest.get('format')!r})")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(f"bundle {path} has format version {manifest['format_version']}, newer than this "
                          f"bassray understands ({FORMAT_VERSION}); upgrade bassray")
    missing = [name for name in manifest.get("files", {}).values() if not (path / name).exists()]
    if missing:
        raise BundleError(f"bundle {path} is incomplete: missing {missing}; export it again")
    return manifest


def load_bundle_state(bundle_dir: str | Path, map_location: str | torch.device = "cpu",
                      expected_kind: str | None = None) -> BundleState:
    """Config, metadata, weights and extra tensors of any bundle (no model is built)."""
    path = Path(bundle_dir)
    metadata = read_bundle_metadata(path)
    if expected_kind is not None and metadata.get("kind") != expected_kind:
        raise BundleError(f"bundle {path} holds a {metadata.get('kind')!r} model, not {expected_kind!r}: "
                          f"pass a {expected_kind} bundle")
    files = metadata["files"]
    device = str(map_location)
    config = load_config_json(path / files["config"])
    state_dict = load_file(str(path / files["weights"]), device=device)
    extra = load_file(str(path / files["extra_tensors"]), device=device) if "extra_tensors" in files else {}
    return BundleState(config=config, metadata=metadata, state_dict=state_dict, extra_tensors=extra)


def load_autoencoder(bundle_dir: str | Path, map_location: str | torch.device = "cpu",
                     stem: str | None = None):
    """The autoencoder of a bundle, in eval mode. ``stem`` ('mix' or the target stem) is checked if given."""
    from bassray.models.autoencoder import Autoencoder

    state = load_bundle_state(bundle_dir, map_location, expected_kind="autoencoder")
    bundle_stem = state.metadata.get("stem")
    if stem is not None and stem != bundle_stem:
        raise BundleError(f"bundle {bundle_dir} is the {bundle_stem!r} autoencoder, not {stem!r}: "
                          f"pass the {stem} autoencoder's bundle")
    model = Autoencoder(state.config.autoencoder_for(bundle_stem), state.config.audio)
    try:
        model.load_state_dict(state.state_dict)
    except RuntimeError as exc:
        raise BundleError(f"weights in {bundle_dir} do not fit the autoencoder its config describes: {exc}") from exc
    return model.to(map_location).eval()
