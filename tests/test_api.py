"""The Python API: each command's options are keyword parameters that help() and an IDE show, with the
defaults of the command's configuration, each documented."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

import featcache
from featcache.config import (
    ExportConfig,
    ExtractConfig,
    HeadConfig,
    LabelsConfig,
    LeaksConfig,
    PredictConfig,
    SweepConfig,
    VerifyConfig,
)
from featcache.errors import ConfigError
from tests.support import FakeBackbone, make_split_dataset

#: each API function of a command: its configuration, and the parameters it names otherwise
CONFIGS = {
    "extract": (ExtractConfig, {"output": "out"}),
    "predict": (PredictConfig, {}),
    "export": (ExportConfig, {}),
    "verify": (VerifyConfig, {}),
    "train_head": (HeadConfig, {}),
    "compare": (HeadConfig, {}),
    "sweep": (SweepConfig, {}),
    "leaks": (LeaksConfig, {}),
    "labels": (LabelsConfig, {}),
}
#: the API functions with no configuration of their own, and the options they share with one
OTHERS = {
    "info": {},
    "compact": {},
    "load": {"memory_budget": HeadConfig},
    "dataset": {"batch_size": HeadConfig, "seed": HeadConfig},
}
#: the parameters an API function may take by position: what it works on and where the result goes
POSITIONAL = {"data_dir", "out", "cache", "split", "images", "head"}


def _public_functions() -> list[str]:
    return [name for name in featcache.__all__ if inspect.isfunction(getattr(featcache, name))]


def test_every_api_function_is_checked_here():
    assert sorted(_public_functions()) == sorted([*CONFIGS, *OTHERS])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_field_of_the_configuration_is_a_parameter_with_its_default(name):
    config, renamed = CONFIGS[name]
    parameters = inspect.signature(getattr(featcache, name)).parameters
    for field in dataclasses.fields(config):
        parameter = parameters.get(renamed.get(field.name, field.name))
        assert parameter is not None, f"featcache.{name} lacks the option {field.name} of {config.__name__}"
        if field.default is dataclasses.MISSING:
            assert parameter.default is inspect.Parameter.empty, f"{name}({parameter.name}) is required"
        else:
            assert parameter.default == field.default, f"{name}({parameter.name}) defaults to {parameter.default!r}"


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_shared_options_take_the_configurations_default(name):
    parameters = inspect.signature(getattr(featcache, name)).parameters
    for option, config in OTHERS[name].items():
        assert parameters[option].default == getattr(config, option)


@pytest.mark.parametrize("name", _public_functions())
def test_options_are_keyword_only_and_nothing_is_hidden_in_kwargs(name):
    for parameter in inspect.signature(getattr(featcache, name)).parameters.values():
        assert parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL), f"{name}(*{parameter.name})"
        if parameter.name not in POSITIONAL:
            assert parameter.kind is parameter.KEYWORD_ONLY, f"{name}({parameter.name}) is not keyword-only"


def _documented(doc: str) -> set[str]:
    """The names of a numpy-style docstring's Parameters section (``a, b : type`` or ``a, b`` lines)."""
    section = re.search(r"Parameters\n\s*-+\n(.*?)(?:\n\s*Returns\n|\Z)", doc, re.S)
    assert section, "no Parameters section"
    lines = [line for line in section.group(1).splitlines() if re.match(r"    \w", line)]
    return {name.strip() for line in lines for name in line.split(" : ")[0].split(",")}


@pytest.mark.parametrize("name", _public_functions())
def test_every_parameter_is_documented_and_so_is_the_result(name):
    function = getattr(featcache, name)
    assert set(inspect.signature(function).parameters) == _documented(function.__doc__)
    assert "\n    Returns\n    -------\n" in function.__doc__


def test_help_shows_the_options_with_their_defaults():
    import pydoc

    signature = pydoc.render_doc(featcache.extract, renderer=pydoc.plaintext).splitlines()[2]
    assert signature.startswith("extract(data_dir: 'str | Path', out: 'str | Path' = ") and "**" not in signature
    assert "batch_size: 'int' = 32," in signature and "augment_seed: 'int | None' = None," in signature


def test_extract_takes_out_and_the_former_output_with_a_warning(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 2, "validation": 1, "test": 1})
    assert featcache.extract(data, out=tmp_path / "a.h5", backbone=FakeBackbone()).output == tmp_path / "a.h5"
    with pytest.warns(DeprecationWarning, match=r"output= is now out=") as caught:
        result = featcache.extract(data, output=tmp_path / "b.h5", backbone=FakeBackbone())
    assert result.output == tmp_path / "b.h5" and (tmp_path / "b.h5").is_file()
    assert len(caught) == 1 and "\n" not in str(caught[0].message) and caught[0].filename == __file__
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match="pass out only"):
        featcache.extract(data, tmp_path / "c.h5", output=tmp_path / "d.h5", backbone=FakeBackbone())


def test_extract_takes_a_backbone_by_name_or_as_an_object(tmp_path, monkeypatch):
    import featcache.extraction.run

    seen = []
    monkeypatch.setattr(featcache.extraction.run, "extract", lambda config, **kw: seen.append((config, kw)))
    fake = FakeBackbone()
    featcache.extract(tmp_path, tmp_path / "a.h5", backbone="resnet50v2")
    featcache.extract(tmp_path, tmp_path / "b.h5", backbone=fake)
    assert seen[0][0].backbone == "resnet50v2" and seen[0][1]["backbone"] is None
    assert seen[1][0].backbone == ExtractConfig.backbone and seen[1][1]["backbone"] is fake


#: each API function with renamed keywords, the function it hands its configuration to, and its renames
HEAD_RENAMES = {"val_fraction": "holdout_fraction", "augmented": "with_views"}
RENAMED = {
    "train_head": ("featcache.training.head", "train_head", HEAD_RENAMES),
    "compare": ("featcache.training.comparison", "compare", HEAD_RENAMES),
    "sweep": ("featcache.training.sweep", "run_sweep", {**HEAD_RENAMES, "cs": "baseline_c"}),
}
#: a value each renamed keyword takes, and what the configuration then holds
VALUES = {"val_fraction": (0.3, 0.3), "augmented": (True, True), "cs": ([0.1, 1.0], (0.1, 1.0))}


@pytest.mark.parametrize("name, old", [(name, old) for name, (*_, renames) in RENAMED.items() for old in renames])
def test_a_former_keyword_still_works_with_one_deprecation_warning(monkeypatch, tmp_path, name, old):
    import importlib
    import warnings

    module, function, renames = RENAMED[name]
    seen = []
    monkeypatch.setattr(importlib.import_module(module), function, lambda cache, out, config, **kw: seen.append(config))
    new, (value, held) = renames[old], VALUES[old]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(featcache, name)(tmp_path / "c.h5", tmp_path / "out", **{new: value})
    with pytest.warns(DeprecationWarning, match=rf"^{name}'s {old}= is now {new}=; ") as caught:
        getattr(featcache, name)(tmp_path / "c.h5", tmp_path / "out", **{old: value})
    assert len(caught) == 1 and "\n" not in str(caught[0].message) and caught[0].filename == __file__
    assert getattr(seen[0], new) == getattr(seen[1], new) == held
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match=f"pass {new} only"):
        getattr(featcache, name)(tmp_path / "c.h5", **{old: value, new: value})


@pytest.mark.parametrize(
    "config, old, new", [(HeadConfig, "val_fraction", "holdout_fraction"), (SweepConfig, "cs", "baseline_c")]
)
def test_the_configurations_take_their_former_field_names_too(config, old, new):
    value = (0.5,) if old == "cs" else 0.5
    with pytest.warns(DeprecationWarning, match=rf"^{config.__name__}'s {old}= is now {new}=") as caught:
        assert getattr(config(**{old: value}), new) == value
    assert len(caught) == 1 and caught[0].filename == __file__
