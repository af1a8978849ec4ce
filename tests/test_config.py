"""The config tree: validation names the field, serialisation round-trips strictly, arms apply."""
import pytest

from em3.config import ARMS, Config, ConfigError, field_help, flatten, from_dict, parse_set, preset, to_dict, with_arm, with_overrides


def test_round_trip_every_arm():
    for arm in ARMS:
        cfg = preset("tiny", arm)
        assert from_dict(to_dict(cfg)) == cfg
        assert cfg.model.arm == arm


@pytest.mark.parametrize("key,value,needle", [
    ("model.fusion.dim", 30, "model.fusion.dim"),
    ("model.fusion.num_queries", -1, "model.fusion.num_queries"),
    ("model.history.strategy", "lorax", "model.history.strategy"),
    ("model.ranker.kind", "xgb", "model.ranker.kind"),
    ("model.cic.weight", -0.5, "model.cic.weight"),
    ("data.positive_threshold", 9, "data.positive_threshold"),
    ("train.epochs", "ten", "train.epochs"),
    ("data.max_history", 0, "data.max_history"),
])
def test_invalid_values_name_the_field(key, value, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        with_overrides(Config(), {key: value})


def test_unknown_key_lists_close_matches():
    with pytest.raises(ConfigError, match="did you mean model.fusion.num_queries"):
        with_overrides(Config(), parse_set(["model.fusion.num_querys=3"]))


def test_unknown_arm_rejected():
    with pytest.raises(ConfigError, match="model.arm"):
        with_arm(Config(), "em4")


def test_from_dict_strict():
    d = to_dict(Config())
    d["train"]["bogus"] = 1
    with pytest.raises(ConfigError, match="train.bogus"):
        from_dict(d)


def test_set_strings_are_coerced():
    cfg = with_overrides(Config(), parse_set(["model.ranker.mlp_hidden=8,4", "model.history.dedup=false", "train.lr_content=3e-4"]))
    assert cfg.model.ranker.mlp_hidden == (8, 4) and cfg.model.history.dedup is False and cfg.train.lr_content == 3e-4
    assert flatten(cfg)["model.ranker.mlp_hidden"] == "8,4"


def test_arms_differ_as_documented():
    assert preset("tiny", "id_only").model.use_content is False
    assert preset("tiny", "em3_no_cic").model.cic.weight == 0
    assert preset("tiny", "em3_text_only").model.fusion.modalities == ("text",)
    assert preset("tiny", "em3").model.history.strategy == "lora"
    assert "query" in field_help("model.fusion.num_queries")
