"""FLIP checkpoints in the reference Lightning layout, and reference JSON configs (the model package's only I/O).

File layout written by :func:`save_flip_checkpoint` (a ``torch.save`` dict)::

    {"state_dict": {"net." + key: tensor, ...},        # reference keys, e.g. net.encoder.layers.0.alpha
     "pytorch-lightning_version": "2.0.0",             # marker so Lightning's loader accepts the file
     "flip_pipeline": {"format_version": 1, "model_name": "tiny", "config": {...FlipConfig...},
                       "metadata": {...caller's metadata...}}}

The reference tools read ``state_dict`` only (``load_from_checkpoint(strict=False)`` / stripping ``net.encoder.``),
so they load our files. :func:`load_flip_checkpoint` reads both ours and the authors' Lightning checkpoints:

- loads with ``torch.load(weights_only=True)``;
- takes the architecture from our ``flip_pipeline.config``, else from ``model_name=``, else infers the released size
  from tensor shapes (channels, layers, registers);
- ignores the reference LightningModule's own buffers (``num_updates``, ``num_iterations``, ``time_counter``,
  ``samples_per_group``) and Lightning's optimizer/loop entries, which live outside ``state_dict`` or outside
  ``net.``;
- accepts ``net.encoder.sparsify.register_coordinates`` when present or absent: it is a dead parameter (spec 9.14)
  whose value never affects outputs;
- raises ``ValueError`` listing every missing and unexpected key, or naming each key whose shape differs (expected
  vs found), and when the ``patch_sizes`` buffer disagrees with the config.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from flip_core.model.build import FLIP_CONFIGS, build_flip_from_config
from flip_core.model.config import FlipConfig
from flip_core.model.flip import Flip

__all__ = [
    "save_flip_checkpoint", "load_flip_checkpoint", "read_flip_checkpoint", "load_flip_state_dict",
    "infer_flip_config", "load_flip_config_json", "LIGHTNING_PREFIX", "METADATA_KEY",
]

logger = logging.getLogger(__name__)

LIGHTNING_PREFIX = "net."
METADATA_KEY = "flip_pipeline"
FORMAT_VERSION = 1
_LIGHTNING_VERSION_MARKER = "2.0.0"
_REFERENCE_MODULE_BUFFERS = frozenset({"num_updates", "num_iterations", "time_counter", "samples_per_group"})
_DEAD_KEYS = frozenset({"encoder.sparsify.register_coordinates"})


def save_flip_checkpoint(model: Flip, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` in the reference Lightning layout plus our metadata, atomically (temp file + rename).

    Args:
        model: a :class:`Flip` (unwrap DeepSpeed/DDP first).
        path: destination file; parent directories are created.
        metadata: optional plain data (dict/list/str/int/float/bool/None, tensors) stored under
            ``flip_pipeline.metadata``, e.g. training step and run name.

    Returns:
        The path written.

    Raises:
        TypeError: model is not a Flip, or metadata holds types ``torch.load(weights_only=True)`` cannot read.
    """
    if not isinstance(model, Flip):
        raise TypeError(f"save_flip_checkpoint expects a flip_core.model.Flip, got {type(model).__name__}")
    _check_plain(metadata or {}, "metadata")
    state = {LIGHTNING_PREFIX + k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "state_dict": state,
        "pytorch-lightning_version": _LIGHTNING_VERSION_MARKER,
        METADATA_KEY: {"format_version": FORMAT_VERSION, "model_name": model.config.name,
                       "config": model.config.to_dict(), "metadata": dict(metadata or {})},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str or int keys")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} has a {type(value).__name__}; checkpoint metadata must be plain data")


def read_flip_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Load a checkpoint file safely and return (state dict with ``net.`` stripped, our metadata or None).

    Accepts a Lightning-style dict with ``state_dict`` (ours or the reference's) or a bare module state dict.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a FLIP checkpoint (no tensors under ``state_dict``/``net.`` keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, unsafe globals
        raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, found {type(raw).__name__}")
    meta = raw.get(METADATA_KEY) if isinstance(raw.get(METADATA_KEY), dict) else None
    source = raw["state_dict"] if isinstance(raw.get("state_dict"), dict) else raw
    state: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if not isinstance(value, torch.Tensor):
            continue
        if key.startswith(LIGHTNING_PREFIX):
            state[key[len(LIGHTNING_PREFIX):]] = value
        elif key.startswith("encoder."):
            state[key] = value
        elif key in _REFERENCE_MODULE_BUFFERS:
            logger.debug("%s: ignoring reference LightningModule buffer %s", path, key)
        else:
            state["<unprefixed>" + key] = value
    if not state:
        raise ValueError(f"{path}: no model tensors found (expected keys 'net.encoder....' under 'state_dict')")
    return state, meta


def infer_flip_config(state: dict[str, torch.Tensor]) -> FlipConfig:
    """Identify the released size from tensor shapes (state dict without ``net.``).

    Raises:
        ValueError: shapes match no released size; pass ``model_name=`` explicitly then.
    """
    try:
        regs = state["encoder.sparsify.registers"]
    except KeyError:
        raise ValueError("cannot infer the model size: 'net.encoder.sparsify.registers' is missing") from None
    layers = 1 + max((int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")), default=-1)
    found = (int(regs.shape[1]), layers, int(regs.shape[0]))
    for cfg in FLIP_CONFIGS.values():
        if (cfg.channels, cfg.layers, cfg.num_registers) == found:
            return cfg
    raise ValueError(f"checkpoint with channels={found[0]}, layers={found[1]}, registers={found[2]} matches no "
                     f"released size {sorted(FLIP_CONFIGS)}; pass model_name= or use our metadata")


def load_flip_state_dict(model: Flip, state: dict[str, torch.Tensor]) -> None:
    """Strictly copy ``state`` (keys without ``net.``) into ``model`` with readable errors.

    Raises:
        ValueError: missing/unexpected keys (all listed), shape mismatches (expected vs found), or a
            ``patch_sizes`` buffer that disagrees with the model.
    """
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and k not in _DEAD_KEYS)
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not fit FLIP-{model.config.name}: missing keys {_pref(missing)}; "
            f"unexpected keys {_pref(unexpected)}")
    wrong = [f"{LIGHTNING_PREFIX}{k}: expected {tuple(own[k].shape)}, found {tuple(v.shape)}"
             for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"checkpoint shapes do not fit FLIP-{model.config.name} (a different size?): "
                         + "; ".join(wrong))
    sizes = state["encoder.sparsify.patch_sizes"]
    if not torch.equal(sizes.float().cpu(), own["encoder.sparsify.patch_sizes"].cpu()):
        raise ValueError(f"checkpoint patch_sizes {sizes.tolist()} differ from the model's "
                         f"{own['encoder.sparsify.patch_sizes'].tolist()}")
    model.load_state_dict({**own, **state}, strict=True)


def _pref(keys: list[str]) -> list[str]:
    return [k.replace("<unprefixed>", "") if k.startswith("<unprefixed>") else LIGHTNING_PREFIX + k for k in keys]


def load_flip_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                         model_name: str | None = None, attention: str = "auto") -> Flip:
    """Build the right FLIP size and load weights from our or the reference's checkpoint file.

    Args:
        path: ``.ckpt`` file (see module docstring for the accepted layouts).
        map_location: device for the tensors and the returned model.
        model_name: released size to build when the file has no ``flip_pipeline`` metadata (else inferred
            from shapes); when both exist they must agree.
        attention: attention back-end of the returned model.

    Returns:
        The model in eval mode on ``map_location``; ``model.checkpoint_metadata`` holds our metadata dict (or {}).

    Raises:
        FileNotFoundError, ValueError: see :func:`read_flip_checkpoint` and :func:`load_flip_state_dict`.
    """
    state, meta = read_flip_checkpoint(path, map_location)
    if meta is not None and "config" in meta:
        config = FlipConfig.from_dict(meta["config"])
        if model_name is not None and model_name.removeprefix("flip-") != config.name:
            raise ValueError(f"{path}: model_name={model_name!r} but the checkpoint says {config.name!r}")
    elif model_name is not None:
        key = model_name.removeprefix("flip-")
        if key not in FLIP_CONFIGS:
            raise ValueError(f"unknown model_name {model_name!r}; valid: {sorted(FLIP_CONFIGS)}")
        config = FLIP_CONFIGS[key]
    else:
        config = infer_flip_config(state)
    model = build_flip_from_config(config, seed=0, attention=attention)
    try:
        load_flip_state_dict(model, state)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    model.checkpoint_metadata = dict((meta or {}).get("metadata", {}))
    return model.to(map_location).eval()


def load_flip_config_json(path: str | os.PathLike) -> FlipConfig:
    """Read a reference ``configs/flip-*.json`` file (or a bare ``"model"`` object) into a :class:`FlipConfig`.

    The name is the file's ``model_path`` (``"flip-tiny"`` -> ``"tiny"``) or its stem.

    Raises:
        FileNotFoundError: no such file. ValueError: invalid JSON or missing keys (named).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from None
    model = data.get("model", data)
    name = str(data.get("model_path") or path.stem).removeprefix("flip-")
    try:
        return FlipConfig.from_reference_model_section(model, name=name)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
