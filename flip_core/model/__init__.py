"""FLIP model package: architecture (torch only), checkpoints and the ``predict_mask`` inference API.

Public names (CONTRACTS.md "Model"): :class:`FlipBatch`, :class:`Flip` (``model(batch) -> logits``),
:func:`mask_loss`, :func:`sampled_point_iou`, :class:`FlipConfig`, :data:`FLIP_MODELS`, :func:`build_flip_model`,
``build_flip_{tiny,small,middle,large}``, :func:`load_flip_config_json`, :func:`save_flip_checkpoint`,
:func:`load_flip_checkpoint`, :func:`predict_mask`, :class:`MaskPrediction`.
"""

from flip_core.model.attention import ATTENTION_BACKENDS, SeqLayout, varlen_attention
from flip_core.model.batch import FlipBatch
from flip_core.model.build import (
    FLIP_CONFIGS,
    FLIP_MODELS,
    build_flip_from_config,
    build_flip_large,
    build_flip_middle,
    build_flip_model,
    build_flip_small,
    build_flip_tiny,
)
from flip_core.model.checkpoint import (
    infer_flip_config,
    load_flip_checkpoint,
    load_flip_config_json,
    read_flip_checkpoint,
    save_flip_checkpoint,
)
from flip_core.model.config import FlipConfig
from flip_core.model.flip import Flip
from flip_core.model.losses import mask_loss, sampled_point_iou
from flip_core.model.mask_head import KVCache
from flip_core.model.predict import PREDICTION_MODES, MaskPrediction, predict_mask

__all__ = [
    "ATTENTION_BACKENDS", "FLIP_CONFIGS", "FLIP_MODELS", "Flip", "FlipBatch", "FlipConfig", "KVCache",
    "MaskPrediction", "PREDICTION_MODES", "SeqLayout", "build_flip_from_config", "build_flip_large",
    "build_flip_middle", "build_flip_model", "build_flip_small", "build_flip_tiny", "infer_flip_config",
    "load_flip_checkpoint", "load_flip_config_json", "mask_loss", "predict_mask", "read_flip_checkpoint",
    "sampled_point_iou", "save_flip_checkpoint", "varlen_attention",
]
