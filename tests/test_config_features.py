"""Config of the user features and ID dropout: validation naming the field, help text, and old logged configs."""
from __future__ import annotations

import pytest

from em3.config import Config, ConfigError, field_help, flatten, from_dict, parse_set, preset, to_dict, with_overrides

NEW_FIELDS = ("data.user_features", "data.user_feature_buckets", "model.ranker.user_features", "train.id_dropout",
              "train.id_dropout_history")


def test_defaults():
    cfg = Config()
    assert cfg.data.user_features == ("auto",) and cfg.data.user_feature_buckets == 10
    assert cfg.model.ranker.user_features is False                    # off until validation says it pays
    assert cfg.train.id_dropout == 0.0 and cfg.train.id_dropout_history is False


@pytest.mark.parametrize("key", NEW_FIELDS)
def test_every_new_field_has_help(key):
    assert len(field_help(key)) > 20


@pytest.mark.parametrize("value, match", [
    (("auto", "age"), r"data\.user_features: 'auto' stands alone"),
    (("age", "age"), r"data\.user_features: column 'age' is named twice"),
    (("user_id",), r"data\.user_features: 'user_id' is the key of the users table"),
    (("age", " "), r"data\.user_features: column names must be non-empty"),
])
def test_bad_user_feature_lists_name_the_field(value, match):
    with pytest.raises(ConfigError, match=match):
        with_overrides(Config(), {"data.user_features": value})


def test_buckets_must_be_positive():
    with pytest.raises(ConfigError, match=r"data\.user_feature_buckets: must be > 0"):
        with_overrides(Config(), {"data.user_feature_buckets": 0})


def test_user_features_from_the_cli_and_an_empty_list():
    cfg = with_overrides(Config(), parse_set(["data.user_features=age,gender"]))
    assert cfg.data.user_features == ("age", "gender")
    none = with_overrides(Config(), parse_set(["data.user_features="]))
    assert none.data.user_features == () and flatten(none)["data.user_features"] == ""
    assert from_dict(to_dict(none)) == none


def test_a_config_logged_before_the_user_feature_switch_rebuilds_the_model_it_trained():
    cfg = preset("movielens")
    assert from_dict(to_dict(cfg)) == cfg                                # a current config round-trips as it is
    old = to_dict(cfg)
    del old["model"]["ranker"]["user_features"]                          # config.json of an earlier run
    assert from_dict(old).model.ranker.user_features is False
