"""SBD spec on format-exact fixtures.

Format source: SBD ``benchmark_RELEASE`` README (``inst/*.mat`` hold struct ``GTinst`` with ``Segmentation``,
``Boundaries``, ``Categories``) and RITM ``isegm/data/datasets/sbd.py`` (``loadmat(...)['GTinst'][0][0][0]``).
The fixture ``.mat`` files are written with ``scipy.io.savemat`` (MATLAB 5 format, as the release).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io

from datasets_spec.base import SpecError
from datasets_spec.sbd import SBDSpec, read_gtinst, sbd_key
from tests.common.spec_fixtures import masks_of, materialize, rgb_jpeg, sbd_mat


def _tree(root):
    seg = np.zeros((30, 40), np.uint8)
    seg[2:10, 2:10] = 1
    seg[12:20, 5:30] = 2
    seg[22:28, 30:38] = 3
    seg[0, :] = 255
    rgb_jpeg(root / "img" / "2008_000202.jpg", 30, 40)
    sbd_mat(root / "inst" / "2008_000202.mat", seg, [15, 7, 12])
    seg2 = np.zeros((30, 40), np.uint8)
    seg2[5:9, 5:9] = 1
    seg2[10:12, 10:12] = 4  # beyond Categories (only 1 entry)
    rgb_jpeg(root / "img" / "2009_000001.jpg", 30, 40, seed=1)
    sbd_mat(root / "inst" / "2009_000001.mat", seg2, [3])
    rgb_jpeg(root / "img" / "2010_000002.jpg", 30, 40, seed=2)
    (root / "inst" / "2010_000002.mat").write_bytes(b"MATLAB 5.0 MAT-file, garbage" + bytes(100))
    rgb_jpeg(root / "img" / "2010_000003.jpg", 30, 40, seed=3)
    scipy.io.savemat(str(root / "inst" / "2010_000003.mat"), {"GTcls": {"Segmentation": seg}})
    rgb_jpeg(root / "img" / "2011_000004.jpg", 30, 40, seed=4)
    sbd_mat(root / "inst" / "2011_000004.mat", np.ones((31, 40), np.uint8), [5])
    (root / "val.txt").write_text("2008_000202\n2009_000001\n2010_000002\n2010_000003\n2011_000004\n2012_000009\n")
    (root / "train.txt").write_text("2008_000202\n")
    return seg


def test_sbd_instances_categories_void(tmp_path):
    seg = _tree(tmp_path)
    got, cats = read_gtinst(tmp_path / "inst" / "2008_000202.mat", source_id="t")
    assert np.array_equal(got, seg) and cats.tolist() == [15, 7, 12]
    spec = pickle.loads(pickle.dumps(SBDSpec(root=tmp_path)))
    assert spec.name == "sbd-val"
    result = materialize(spec)
    by_id = {s.source_id: (s, items) for s, _, items in result.values()}
    s, items = by_id["sbd/2008_000202"]
    assert s.key == 2008000202
    assert [(m.category_id, m.metadata["instance_id"]) for m in items] == [(15, 1), (7, 2), (12, 3)]
    for m in items:
        assert np.array_equal(m.mask, seg == m.metadata["instance_id"])
        assert np.array_equal(m.ignore, seg == 255)
    s2, items2 = by_id["sbd/2009_000001"]
    assert [m.category_id for m in items2] == [3]
    assert [(r.source_id, r.reason) for r in s2.rejects] == [("sbd/2009_000001/4", "unknown_label")]
    reasons = {r.source_id: r.reason for r in spec.enumeration_rejects()}
    assert reasons == {"sbd/2010_000002": "malformed_mat", "sbd/2010_000003": "malformed_mat",
                       "sbd/2012_000009": "missing_file"}
    # 2011_000004: the .mat map is one row taller than the image -> size_mismatch per instance.
    s4, items4 = by_id["sbd/2011_000004"]
    assert [r.reason for r in items4] == ["size_mismatch"]
    assert len(masks_of(result)) == 4


def test_sbd_train_split_and_bad_ids(tmp_path):
    _tree(tmp_path)
    assert [s.key for s in SBDSpec(root=tmp_path, split="train").samples()] == [2008000202]
    (tmp_path / "val.txt").write_text("not_an_id\n")
    with pytest.raises(SpecError, match="not_an_id"):
        list(SBDSpec(root=tmp_path).samples())
    assert sbd_key("2007_000032") == 2007000032
