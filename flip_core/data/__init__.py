"""FLIP training data: image index with the reference's loader filters, seeded rank-disjoint mixture sampler,
per-draw prompt construction (``cython_ops`` sampling) and packing into ``flip_core.model.FlipBatch``.

Modules: :mod:`~flip_core.data.index`, :mod:`~flip_core.data.sampler`, :mod:`~flip_core.data.dataset`,
:mod:`~flip_core.data.collate`. The loader for one rank is built by ``flip_core.train.data_setup.build_loader``.
"""
