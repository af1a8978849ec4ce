"""ID dropout (train.id_dropout): the marks drop_ids draws, and that fit draws them in training only, seeded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from em3.config import ConfigError, preset, with_overrides
from em3.training.batches import drop_ids, id_dropout_rng
from em3.training.fit import fit
from tests.training.fakes import FakeModel, fake_samples

CPU = torch.device("cpu")
BASE_KEYS = {"user", "item", "history", "label"}


def _batch(b: int = 4000, n_l: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(1, 50, (b, n_l), generator=g)
    history[torch.arange(n_l)[None, :] < torch.randint(0, n_l + 1, (b, 1), generator=g)] = 0   # left padding
    return {"user": torch.randint(0, 9, (b,), generator=g), "item": torch.randint(1, 50, (b,), generator=g),
            "history": history, "label": torch.zeros(b)}


def test_p_0_leaves_the_batch_untouched():
    batch = _batch()
    before = {k: v.clone() for k, v in batch.items()}
    out = drop_ids(batch, p=0.0, history=True, rng=np.random.default_rng(0))
    assert out is batch and out.keys() == BASE_KEYS
    for k, v in before.items():
        assert torch.equal(out[k], v)


def test_p_half_marks_about_half_of_the_targets_and_leaves_the_ids_themselves_alone():
    batch = _batch()
    out = drop_ids(batch, p=0.5, history=False, rng=np.random.default_rng(0))
    assert out.keys() == BASE_KEYS | {"drop_item_id"}                 # history flag off: no history marks
    marks = out["drop_item_id"]
    assert marks.dtype == torch.bool and marks.shape == (4000,)
    assert abs(marks.float().mean().item() - 0.5) < 4 * (0.25 / 4000) ** 0.5   # 4 sigma
    for k in BASE_KEYS:                                                # the model maps marks; the batch stays
        assert torch.equal(out[k], batch[k])


def test_history_marks_follow_the_flag_and_never_touch_padding():
    batch = _batch()
    out = drop_ids(batch, p=0.5, history=True, rng=np.random.default_rng(1))
    marks, real = out["drop_history_id"], batch["history"] != 0
    assert marks.shape == batch["history"].shape
    assert not marks[~real].any()                                     # padding is never dropped
    share = marks[real].float().mean().item()
    assert abs(share - 0.5) < 4 * (0.25 / real.sum().item()) ** 0.5


def test_marks_are_seeded():
    batch = _batch(200)
    a = drop_ids(batch, p=0.3, history=True, rng=id_dropout_rng(seed=4, epoch=2, rank=0))
    b = drop_ids(batch, p=0.3, history=True, rng=id_dropout_rng(seed=4, epoch=2, rank=0))
    c = drop_ids(batch, p=0.3, history=True, rng=id_dropout_rng(seed=4, epoch=3, rank=0))
    assert torch.equal(a["drop_item_id"], b["drop_item_id"]) and torch.equal(a["drop_history_id"], b["drop_history_id"])
    assert not torch.equal(a["drop_item_id"], c["drop_item_id"])


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_id_dropout_outside_0_1_names_the_field(value):
    with pytest.raises(ConfigError, match=r"train\.id_dropout: must be in \[0, 1\)"):
        with_overrides(preset("tiny", "id_only"), {"train.id_dropout": value})


class RecordingModel(FakeModel):
    """FakeModel that records, per forward, whether it was training and the batch's drop marks."""

    def __init__(self, samples):
        super().__init__(samples)
        self.seen: list[tuple[bool, set[str], torch.Tensor | None]] = []

    def forward(self, batch):
        mark = batch.get("drop_item_id")
        self.seen.append((self.training, set(batch), None if mark is None else mark.clone()))
        return super().forward(batch)


def _fit(**over) -> RecordingModel:
    cfg = with_overrides(preset("tiny", "id_only"), {"train.epochs": 2, "train.batch_size": 64,
                                                     "train.max_steps_per_epoch": 3, "train.patience": 0, **over})
    samples = fake_samples()
    torch.manual_seed(0)
    model = RecordingModel(samples)
    fit(model, samples, cfg, device=CPU)
    return model


def test_fit_drops_in_training_only_and_reproducibly():
    model = _fit(**{"train.id_dropout": 0.5, "train.id_dropout_history": True})
    train = [s for s in model.seen if s[0]]
    evals = [s for s in model.seen if not s[0]]
    assert len(train) == 6 and evals                                   # 2 epochs x 3 steps, + validation
    assert all(keys == BASE_KEYS | {"drop_item_id", "drop_history_id"} for _, keys, _ in train)
    assert all(keys == BASE_KEYS for _, keys, _ in evals)             # evaluation never drops
    share = torch.cat([m for _, _, m in train]).float().mean().item()
    assert 0.3 < share < 0.7
    again = _fit(**{"train.id_dropout": 0.5, "train.id_dropout_history": True})
    for (_, _, m1), (_, _, m2) in zip(train, [s for s in again.seen if s[0]], strict=True):
        assert torch.equal(m1, m2)


def test_fit_without_id_dropout_adds_no_marks():
    model = _fit()
    assert all(keys == BASE_KEYS for _, keys, _ in model.seen)
