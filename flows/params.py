"""Typed flow parameters (pydantic models: Prefect renders them as forms in its UI and validates them on submit).

Every model forbids unknown fields, so a misspelt deployment parameter fails the run at parameter validation with
``Flow run received invalid parameters: - train.stepz: Extra inputs are not permitted`` before any work starts.
Paths are checked for existence when the flow run starts (on the machine that runs it), naming the field and path.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datasets_spec import SPECS

__all__ = ["DataSource", "ConvertParams", "TrainParams", "EvalParams", "spec_argv", "build_spec",
           "default_sources"]

OptionValue = str | int | float | bool


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Params):
    """One dataset source to convert: a ``datasets_spec`` format and its options."""

    format: str = Field(description="datasets_spec format: " + ", ".join(sorted(SPECS)))
    name: str | None = Field(default=None, description="output name (sub-directory of OUT/shards); default: format")
    images: str | None = Field(default=None, description="image directory (coco, lvis)")
    annotations: str | None = Field(default=None, description="annotation JSON file (coco, lvis)")
    root: str | None = Field(default=None, description="dataset root (the other formats; procedural: where to write)")
    options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="other options of `flip convert FORMAT`, without the dashes, e.g. {\"keep-crowd\": true}")
    use: Literal["train", "eval", "both"] = Field(default="both", description="train on it, evaluate on it, or both")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in SPECS:
            raise ValueError(f"unknown dataset format {value!r}; known formats: {', '.join(sorted(SPECS))}")
        return value

    @model_validator(mode="after")
    def _paths_exist(self) -> DataSource:
        for field_name in ("images", "annotations", "root"):
            value = getattr(self, field_name)
            if value is None or (field_name == "root" and self.format == "procedural"):
                continue
            if not Path(value).expanduser().exists():
                raise ValueError(f"{self.format} source: {field_name} path {value!r} does not exist")
        return self

    @classmethod
    def from_argv(cls, format: str, argv: list[str], **fields) -> DataSource:
        """The source for ``flip convert FORMAT ARGV...`` options (``--images/--annotations/--root`` become fields,
        ``--flag`` becomes ``True``, ``--key value`` an option). Raises ValueError on a stray positional token."""
        values: dict[str, Any] = {}
        options: dict[str, OptionValue] = {}
        i = 0
        while i < len(argv):
            token = argv[i]
            if not token.startswith("--"):
                raise ValueError(f"{format} source: unexpected argument {token!r} (options look like --key value)")
            key, _, inline = token[2:].partition("=")
            if inline:
                value, i = inline, i + 1
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 2
            else:
                value, i = True, i + 1
            if key in ("images", "annotations", "root", "name"):
                values[key] = value
            else:
                options[key] = value
        return cls(format=format, options=options, **values, **fields)

    @property
    def label(self) -> str:
        """The source's output name: ``name`` or the format."""
        return self.name or self.format


class ConvertParams(_Params):
    """Conversion settings shared by every source (see ``flip convert --help``)."""

    shard_size: int = Field(default=64, ge=1, description="images per HDF5 shard")
    num_workers: int | None = Field(default=None, ge=1, description="parallel Ray conversion tasks (default: CPUs)")
    overwrite: bool = Field(default=False, description="rewrite shards that already verify instead of skipping them")


class TrainParams(_Params):
    """Training settings (see ``flip train --help``)."""

    model: str = Field(default="tiny", description="FLIP model size: tiny, small, middle, large")
    steps: int = Field(default=20, ge=1, description="total optimizer steps")
    num_workers: int = Field(default=1, ge=1, description="Ray Train workers (one GPU each with use_gpu)")
    use_gpu: bool = Field(default=False, description="train on GPUs (one per worker)")
    seed: int = Field(default=0, description="seed of every random draw")
    deepspeed_config: str | None = Field(default=None, description="DeepSpeed JSON config (default: ZeRO-0 fp32)")
    resume: bool = Field(default=False, description="continue from the run directory's latest checkpoint")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="extra flip_core.train.TrainConfig fields, passed verbatim")


class EvalParams(_Params):
    """Evaluation settings (see ``flip evaluate --help``)."""

    protocols: list[Literal["flip", "clicks"]] = Field(default_factory=lambda: ["flip"],
                                                       description="evaluation protocols")
    num_workers: int | None = Field(default=None, ge=1, description="parallel Ray evaluation tasks (default: CPUs)")
    max_instances: int | None = Field(default=None, ge=1,
                                      description="evaluate at most this many instances per shard (quick checks)")
    seed: int = Field(default=0, description="seed of the evaluation's random draws")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="extra flip_core.eval.EvalConfig fields, passed verbatim")


def default_sources(root: str) -> list[DataSource]:
    """The ``flip run`` default: procedural scenes generated under ``root``."""
    return [DataSource(format="procedural", root=root)]


def spec_argv(source: DataSource) -> list[str]:
    """The ``flip convert FORMAT`` argument list equivalent to ``source``."""
    argv: list[str] = []
    for field_name in ("images", "annotations", "root"):
        value = getattr(source, field_name)
        if value is not None:
            argv += [f"--{field_name}", str(Path(value).expanduser())]
    for key, value in source.options.items():
        flag = f"--{key.lstrip('-')}"
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return argv


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit the worker process
        raise ValueError(f"{self.prog}: {message}")


def build_spec(source: DataSource):
    """Build the ``DatasetSpec`` for ``source`` through its format module's own CLI parser.

    Raises:
        ValueError: missing/unknown options for the format (argparse's message, prefixed with the format).
        datasets_spec.base.SpecError: the source is malformed.
    """
    from datasets_spec import spec_module

    module = spec_module(source.format)
    parser = _RaisingParser(prog=f"source {source.label} ({source.format})", add_help=False)
    module.add_cli_arguments(parser)
    return module.from_cli_args(parser.parse_args(spec_argv(source)))
