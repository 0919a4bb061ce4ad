"""Checkpoints in the reference Lightning layout: both directions, safe loading and readable errors."""

from __future__ import annotations

import pytest
import torch

from flip_core.model import (
    build_flip_small,
    build_flip_tiny,
    load_flip_checkpoint,
    read_flip_checkpoint,
    save_flip_checkpoint,
)
from flip_core.model.synthetic import synthetic_batch


def reference_keys(layers: int = 3, num_res: int = 5) -> set[str]:
    """The reference's Lightning state-dict keys for FLIP-tiny, written out from the reference module tree
    (``nn/sparse_resolution_independent.py``: nn.Sequential indices include parameter-free Rearrange/SiLU slots)."""
    keys = {"net.encoder.sparsify." + k for k in ("registers", "register_embeddings", "register_coordinates",
                                                  "patch_sizes")}
    for r in range(num_res):
        idx = (1, 3) if r < 3 else (1, 4, 6)
        keys |= {f"net.encoder.sparsify.patch_embeddings.{r}.layers.{i}.{w}" for i in idx for w in ("weight", "bias")}

    def ffb(prefix):
        return {f"{prefix}.{n}" for n in ("weight1", "bias1", "weight2", "bias2", "alpha", "norm.weight",
                                          "norm.bias")}

    def mlp(prefix, idx):
        return {f"{prefix}.{i}.{w}" for i in idx for w in ("weight", "bias")}

    for i in range(layers):
        a = f"net.encoder.layers.{i}.attention"
        keys |= {f"net.encoder.layers.{i}.alpha", f"{a}.alpha"} | ffb(f"net.encoder.layers.{i}.mlp")
        for n in ("key", "query", "value"):
            keys |= mlp(f"{a}.{n}", (0, 2, 4))
        for n in ("q", "k", "v"):
            keys |= mlp(f"{a}.{n}", (0, 1))
        keys |= mlp(f"{a}.out", (1,))
    m = "net.encoder.mask_extractor"
    keys |= ffb(f"{m}.preprocess") | ffb(f"{m}.postprocess") | {f"{m}.to_mask.weight", f"{m}.to_mask.bias"}
    for n in ("key", "query", "value"):
        keys |= mlp(f"{m}.attention.{n}", (0, 2, 4))
    keys |= mlp(f"{m}.attention.k", (0, 1)) | mlp(f"{m}.attention.v", (0, 1)) | mlp(f"{m}.attention.k_mlp", (0, 2))
    keys |= mlp(f"{m}.attention.out", (1,))
    return keys


def _logits(model, seed=0):
    batch = synthetic_batch(model.config.patch_sizes, [30, 45], [40, 50], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(batch)


def test_saved_keys_are_reference_keys(tmp_path):
    path = save_flip_checkpoint(build_flip_tiny(seed=0), tmp_path / "a.ckpt", metadata={"step": 3})
    raw = torch.load(path, weights_only=True)
    assert set(raw["state_dict"]) == reference_keys()
    assert raw["state_dict"]["net.encoder.sparsify.patch_sizes"].tolist() == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert raw["flip_pipeline"]["model_name"] == "tiny"


def test_round_trip_identical_outputs(tmp_path):
    model = build_flip_tiny(seed=1)
    path = save_flip_checkpoint(model, tmp_path / "ours.ckpt", metadata={"step": 12, "run": "x"})
    loaded = load_flip_checkpoint(path)
    assert loaded.checkpoint_metadata == {"step": 12, "run": "x"}
    assert not loaded.training
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


def test_reference_lightning_checkpoint_without_metadata(tmp_path):
    """A file shaped like the authors' Lightning checkpoint: net.* weights, module buffers, optimizer state."""
    model = build_flip_tiny(seed=2)
    state = {"net." + k: v.clone() for k, v in model.state_dict().items()}
    state["net.encoder.sparsify.register_coordinates"] = torch.full((8, 2), 123.0)  # dead: any value
    state.update(num_updates=torch.tensor(5), num_iterations=torch.tensor(7), time_counter=torch.tensor(1.0),
                 samples_per_group=torch.tensor([296] + [292] * 6))
    ckpt = {"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "2.1.0", "state_dict": state,
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 6e-4}]}], "lr_schedulers": []}
    path = tmp_path / "quicksave.ckpt"
    torch.save(ckpt, path)
    loaded = load_flip_checkpoint(path)  # size inferred from shapes
    assert loaded.config.name == "tiny"
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    # and back: our save of the loaded model is readable as the same reference layout
    again = save_flip_checkpoint(loaded, tmp_path / "again.ckpt")
    assert set(torch.load(again, weights_only=True)["state_dict"]) == reference_keys()


def test_dead_register_coordinates_may_be_absent(tmp_path):
    model = build_flip_tiny(seed=3)
    state = {"net." + k: v for k, v in model.state_dict().items() if not k.endswith("register_coordinates")}
    torch.save({"state_dict": state}, tmp_path / "x.ckpt")
    torch.testing.assert_close(_logits(load_flip_checkpoint(tmp_path / "x.ckpt", model_name="tiny")), _logits(model))


def test_missing_and_unexpected_keys_listed(tmp_path):
    state = {"net." + k: v for k, v in build_flip_tiny(seed=0).state_dict().items()}
    del state["net.encoder.layers.1.alpha"]
    del state["net.encoder.mask_extractor.to_mask.bias"]
    state["net.encoder.extra.weight"] = torch.zeros(2)
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError) as exc:
        load_flip_checkpoint(tmp_path / "bad.ckpt", model_name="tiny")
    msg = str(exc.value)
    for key in ("net.encoder.layers.1.alpha", "net.encoder.mask_extractor.to_mask.bias", "net.encoder.extra.weight"):
        assert key in msg


def test_wrong_size_names_shapes(tmp_path):
    path = save_flip_checkpoint(build_flip_small(seed=0), tmp_path / "small.ckpt")
    state, _ = read_flip_checkpoint(path)
    torch.save({"state_dict": {"net." + k: v for k, v in state.items() if not k.startswith("encoder.layers.")
                               or int(k.split(".")[2]) < 3}}, tmp_path / "small_nometa.ckpt")
    with pytest.raises(ValueError, match=r"registers: expected \(8, 64\), found \(8, 128\)"):
        load_flip_checkpoint(tmp_path / "small_nometa.ckpt", model_name="tiny")
    with pytest.raises(ValueError, match="model_name='tiny' but the checkpoint says 'small'"):
        load_flip_checkpoint(path, model_name="tiny")


def test_unsafe_pickle_rejected(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "obj": object.__new__(_Opaque)}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_flip_checkpoint(path)


class _Opaque:
    pass


def test_metadata_must_be_plain(tmp_path):
    with pytest.raises(TypeError, match="plain data"):
        save_flip_checkpoint(build_flip_tiny(seed=0), tmp_path / "m.ckpt", metadata={"x": object()})
    assert not list(tmp_path.iterdir())


def test_not_a_checkpoint(tmp_path):
    torch.save({"state_dict": {"foo": 1}}, tmp_path / "e.ckpt")
    with pytest.raises(ValueError, match="no model tensors"):
        load_flip_checkpoint(tmp_path / "e.ckpt")
    with pytest.raises(FileNotFoundError):
        load_flip_checkpoint(tmp_path / "missing.ckpt")
