"""Fuzz the config parser: from_dict, with_overrides, parse_set and `train --config FILE.yaml`.

Any input gives a valid Config or a ConfigError naming the field at fault; YAML is read with
a safe loader (a `!!python/...` tag is refused, never executed).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from em3.cli import train as train_cli
from em3.config import Config, ConfigError, flatten, from_dict, parse_set, to_dict, with_overrides
from tests.reliability.fs_audit import FsAudit

pytestmark = pytest.mark.reliability
FUZZ = settings(max_examples=100, deadline=None)

KEYS = sorted(flatten(Config()))
SECTIONS = sorted(to_dict(Config()))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**80), 2**80),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                   st.sampled_from(["1e999", "nan", "-1", "0", "true", "lora", "din", "image,text", ""]))
KEY = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS), st.text(max_size=10), st.integers(), st.none())
NESTED = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(KEY, inner, max_size=4)), max_leaves=12)


def _valid_or_config_error(make) -> Config | None:
    try:
        cfg = make()
    except ConfigError as e:
        assert str(e).strip()
        return None
    assert isinstance(cfg, Config)
    assert from_dict(to_dict(cfg)) == cfg    # what was accepted round-trips exactly
    return cfg


@st.composite
def config_tree(draw) -> dict:
    tree = to_dict(Config())
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        node = tree
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = draw(NESTED)
    if draw(st.booleans()):
        tree[draw(KEY)] = draw(NESTED)
    return tree


@FUZZ
@given(data=st.one_of(config_tree(), st.dictionaries(KEY, NESTED, max_size=5), NESTED))
def test_from_dict_gives_a_config_or_a_config_error(data):
    _valid_or_config_error(lambda: from_dict(data))


@FUZZ
@given(overrides=st.dictionaries(st.one_of(st.sampled_from(KEYS), KEY), NESTED, max_size=4))
def test_with_overrides_gives_a_config_or_a_config_error(overrides):
    cfg = _valid_or_config_error(lambda: with_overrides(Config(), overrides))
    if cfg is not None:
        flat = flatten(cfg)
        assert set(flat) == set(KEYS)


@FUZZ
@given(items=st.lists(st.one_of(st.text(max_size=20),
                                st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), SCALAR)), max_size=4))
def test_parse_set_then_overrides(items):
    _valid_or_config_error(lambda: with_overrides(Config(), parse_set(items)))


def test_unknown_keys_and_wrong_types_name_the_field():
    with pytest.raises(ConfigError, match=r"^model\.fusion\.num_querys: unknown config key; did you mean "
                                          r"model\.fusion\.num_queries"):
        from_dict({"model": {"fusion": {"num_querys": 4}}})
    with pytest.raises(ConfigError, match=r"^train\.epochs: expected an integer, got 'ten'"):
        with_overrides(Config(), parse_set(["train.epochs=ten"]))
    with pytest.raises(ConfigError, match=r"^train\.lr_content: expected a finite number"):
        from_dict({"train": {"lr_content": float("inf")}})
    with pytest.raises(ConfigError, match=r"^train\.seed: expected an integer within int64"):
        with_overrides(Config(), {"train.seed": 10**30})
    with pytest.raises(ConfigError, match=r"^1: unknown config key"):
        from_dict({1: 2})


# ---- YAML files through `python -m em3 train --config` -------------------------------------------------

def _args(path: Path) -> argparse.Namespace:
    return argparse.Namespace(data="synthetic", preset="tiny", data_dir="", config=str(path))


@FUZZ
@given(text=st.one_of(st.text(max_size=200),
                      st.builds(lambda k, v: f"{k.split('.')[0]}:\n  {'.'.join(k.split('.')[1:])}: {v}\n",
                                st.sampled_from(KEYS), SCALAR),
                      st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_yaml_config_file_gives_a_config_or_a_config_error(tmp_path_factory, text: str):
    path = tmp_path_factory.mktemp("yaml") / "cfg.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _valid_or_config_error(lambda: train_cli.base_config(_args(path)))


@pytest.mark.parametrize("payload", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "train: !!python/object/apply:os.system ['touch {marker}']",
    "train:\n  epochs: !!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
])
def test_yaml_python_tags_are_refused_not_executed(tmp_path: Path, payload: str):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(payload.format(marker=marker))
    with FsAudit() as audit:
        with pytest.raises(ConfigError, match=rf"--config {path}"):
            train_cli.base_config(_args(path))
    assert not marker.exists() and audit.writes == []


def test_yaml_alias_bomb_is_refused_or_bounded(tmp_path: Path):
    """A billion-laughs file must not expand into memory: the safe loader shares the aliased list, and
    from_dict refuses it at the first wrong type."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                                                    for p, c in zip("abcdefgh", "bcdefghi")]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\ntrain:\n  epochs: *i\n")
    with pytest.raises(ConfigError, match=r"^(a|train\.epochs)"):
        train_cli.base_config(_args(path))


def test_cli_reports_a_bad_config_file_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  fusion:\n    num_queries: many\n")
    assert train_cli.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.fusion.num_queries: expected an integer, got 'many'" in err and "Traceback" not in err
