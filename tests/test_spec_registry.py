"""Every spec module of issue 8 is registered and exposes the CLI surface of the spec contract (CONTRACTS.md)."""

from __future__ import annotations

import argparse
import pickle

import pytest

from datasets_spec import SPECS, spec_module
from datasets_spec.base import DatasetSpec

MINE = {
    "openimages": ["--root", "R", "--split", "train"],
    "hypersim": ["--root", "R", "--image-source", "color_hdf5", "--min-pixels", "4"],
    "kitti360": ["--root", "R", "--sequences", "3", "--include-stuff"],
    "sa1b": ["--root", "R", "--bucketing"],
    "grabcut": ["--root", "R"],
    "berkeley": ["--root", "R"],
    "davis": ["--root", "R", "--merge-objects"],
    "coco_mval": ["--root", "R"],
    "sbd": ["--root", "R", "--split", "train"],
}


@pytest.mark.parametrize("name", sorted(MINE))
def test_cli_surface(name):
    assert name in SPECS
    module = spec_module(name)
    assert module.__doc__ and "--root" in module.__doc__ and "DIR/" in module.__doc__
    parser = argparse.ArgumentParser(prog=f"flip convert {name}", epilog=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_cli_arguments(parser)
    assert "--root" in parser.format_help()
    spec = module.from_cli_args(parser.parse_args(MINE[name]))
    assert isinstance(spec, DatasetSpec) and spec.name
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --root is required


def test_cli_values_reach_the_spec():
    def parse(name):
        module = spec_module(name)
        parser = argparse.ArgumentParser()
        module.add_cli_arguments(parser)
        return module.from_cli_args(parser.parse_args(MINE[name]))

    assert parse("openimages").name == "openimages-train"
    assert parse("hypersim").image_source == "color_hdf5" and parse("hypersim").min_pixels == 4
    assert parse("kitti360").sequences == ("3",) and parse("kitti360").include_stuff
    assert parse("sa1b").bucketing
    assert parse("davis").merge_objects and parse("davis").mask_rule == "index"
    assert parse("grabcut").mask_rule == "band128" and parse("grabcut").images_dir == "data_GT"
    assert parse("sbd").name == "sbd-train"


@pytest.mark.parametrize("name", sorted(MINE))
def test_flip_convert_help_shows_layout(name, capsys):
    cli = pytest.importorskip("flip_core.cli")
    with pytest.raises(SystemExit) as exc:
        cli.main(["convert", name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--root" in out and "--out" in out and "DIR/" in out
