"""TopKConfig: the authors' public settings as defaults, validation naming the field, strict round trip."""
from __future__ import annotations

import pytest

from em3.config import ConfigError
from em3.topk.config import TopKConfig, config_hash, from_dict, to_dict, with_overrides


def test_defaults_are_the_authors_settings():
    c = TopKConfig()
    assert (c.batch_size, c.lr, c.embedding_dim, c.knn_k, c.mm_image_weight, c.edge_dropout) == (2048, 1e-3, 64, 10, 0.1, 0.8)
    assert (c.cic_weight, c.cic_temperature, c.cic_negatives, c.patience, c.topk) == (1e-3, 0.1, 16, 20, (10, 20, 50))


@pytest.mark.parametrize("overrides, field", [
    ({"model": "bpr"}, "topk.model"), ({"edge_dropout": 1.0}, "topk.edge_dropout"), ({"lr": 0}, "topk.lr"),
    ({"mm_image_weight": 1.5}, "topk.mm_image_weight"), ({"topk": (10, 50)}, "topk.topk"),
    ({"embedding_dim": 30, "fusion_heads": 4}, "topk.embedding_dim"), ({"content_input": "raw"}, "topk.content_input"),
])
def test_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        TopKConfig(**overrides)


def test_round_trip_and_strict_keys():
    c = with_overrides(TopKConfig(), {"model": "em3_freedom", "topk": "10,20", "lr": "0.01"})
    assert c.topk == (10, 20) and c.lr == 0.01
    assert from_dict(to_dict(c)) == c
    with pytest.raises(ConfigError, match="topk.lrr: unknown config key; did you mean topk.lr"):
        from_dict({"lrr": 1})
    with pytest.raises(ConfigError, match="topk.epochs: expected an integer"):
        from_dict({"epochs": "many"})


def test_config_hash_tracks_config_and_dataset():
    c = TopKConfig()
    assert config_hash(c, dataset="a") == config_hash(TopKConfig(), dataset="a")
    assert config_hash(c, dataset="a") != config_hash(c, dataset="b")
    assert config_hash(c, dataset="a") != config_hash(with_overrides(c, {"seed": 1}), dataset="a")
