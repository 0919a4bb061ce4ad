"""Export adapters around :mod:`flip_core.model` (ONNX encoder/predictor graphs)."""

from flip_core.export.onnx import EncoderGraph, ExportResult, PredictorGraph, export_onnx, onnx_parity

__all__ = ["EncoderGraph", "PredictorGraph", "ExportResult", "export_onnx", "onnx_parity"]
