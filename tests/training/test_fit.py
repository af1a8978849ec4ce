"""The fit loop on a fake model: learning, determinism, early stopping, cancel, NaN, param groups."""
from __future__ import annotations

import pytest
import torch

from em3.config import preset, with_overrides
from em3.errors import RunError
from em3.evaluation.evaluate import evaluate_split
from em3.training.fit import fit, make_optimizer
from em3.training.hooks import Hooks
from tests.training.fakes import FakeModel, fake_samples

CPU = torch.device("cpu")


def _cfg(**over):
    base = {"train.epochs": 3, "train.batch_size": 64, "train.lr_ranker": 0.02, "train.patience": 0}
    return with_overrides(preset("tiny", "id_only"), {**base, **over})


def _train(cfg, samples, **kw):
    torch.manual_seed(cfg.train.seed)
    model = FakeModel(samples)
    state, ended = fit(model, samples, cfg, device=CPU, **kw)
    return model, state, ended


def test_fit_learns():
    samples = fake_samples()
    model, state, ended = _train(_cfg(**{"train.epochs": 6}), samples)
    assert ended == "completed" and state.epoch == 6 and state.global_step == 6 * 7   # 420 train rows / 64
    assert state.best_auc > 0.6


def test_a_worse_final_epoch_leaves_the_best_epochs_weights_in_the_model():
    samples = fake_samples()
    epochs, snapshots, aucs = 4, {}, {}

    def sabotage(st, metrics, optimizer) -> None:
        snapshots[st.epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        aucs[st.epoch] = metrics["val/auc"]
        if st.epoch == epochs - 1:                          # the last epoch starts from flipped logits, lr 0:
            for g in optimizer.param_groups:                # its val AUC is 1 - the previous one
                g["lr"] = 0.0
            with torch.no_grad():
                model.mlp[-1].weight.neg_()
                model.mlp[-1].bias.neg_()

    torch.manual_seed(0)
    model = FakeModel(samples)
    state, ended = fit(model, samples, _cfg(**{"train.epochs": epochs}), device=CPU, on_epoch_end=sabotage)
    assert ended == "completed" and aucs[epochs] < 0.5 < max(aucs.values())
    assert state.best_epoch < epochs and aucs[state.best_epoch] == max(aucs.values()) == state.best_auc
    restored = model.state_dict()
    for name, value in snapshots[state.best_epoch].items():
        torch.testing.assert_close(restored[name], value, rtol=0, atol=0, msg=name)
    assert not torch.equal(restored["mlp.3.weight"], snapshots[epochs]["mlp.3.weight"])   # not the last epoch's
    val = evaluate_split(model, samples, "val", batch_size=256, device=CPU)
    assert val["auc"] == pytest.approx(state.best_auc)


def test_same_seed_same_metrics_other_seed_differs():
    samples = fake_samples()
    a = _train(_cfg(), samples)[1].best_auc
    b = _train(_cfg(), samples)[1].best_auc
    c = _train(_cfg(**{"train.seed": 1}), samples)[1].best_auc
    assert a == b
    assert a != c


def test_progress_hooks_and_max_steps():
    samples = fake_samples()
    seen, epochs = [], []
    hooks = Hooks(on_progress=seen.append, on_epoch=lambda e, m: epochs.append((e, m)))
    _, state, _ = _train(_cfg(**{"train.max_steps_per_epoch": 2, "train.epochs": 2}), samples, hooks=hooks)
    assert state.global_step == 4
    assert [p.step for p in seen] == [1, 2, 1, 2]
    assert all(p.samples_per_s > 0 and p.phase == "train" for p in seen)
    # the ETA (em3/training/eta.py): epoch 1 still has epoch 2's steps ahead; the last step has only its epoch's
    # validation left, estimated by epoch 1's pass
    assert 0 < seen[1].eta_s < float("inf")
    assert seen[-1].eta_s == pytest.approx(epochs[0][1]["time/val_epoch_seconds"])
    assert [e for e, _ in epochs] == [1, 2] and "val/auc" in epochs[0][1]


def test_early_stopping_on_patience():
    samples = fake_samples()
    # lr 0 -> validation AUC never improves after epoch 1 -> stop after 1 + patience epochs
    _, state, ended = _train(_cfg(**{"train.lr_ranker": 1e-12, "train.epochs": 10, "train.patience": 2}), samples)
    assert ended == "early_stop" and state.epoch == 3 and state.best_epoch == 1


def test_cancel_flag_stops_cooperatively():
    samples = fake_samples()
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    _, state, ended = _train(_cfg(), samples, hooks=Hooks(should_stop=stop))
    assert ended == "cancelled" and state.global_step == 3


def test_nan_loss_raises_run_error_naming_epoch_and_step():
    samples = fake_samples()
    torch.manual_seed(0)
    model = FakeModel(samples)
    model.poison = True
    with pytest.raises(RunError, match=r"loss became NaN at epoch 1 step 1"):
        fit(model, samples, _cfg(), device=CPU)


def test_optimizer_has_separate_content_and_ranker_learning_rates():
    class WithContent(FakeModel):
        def __init__(self, samples):
            super().__init__(samples)
            self.content = torch.nn.Linear(4, 4)

    opt = make_optimizer(WithContent(fake_samples()), _cfg(**{"train.lr_content": 1e-4, "train.lr_ranker": 1e-2}))
    lrs = {g["name"]: (g["lr"], len(g["params"])) for g in opt.param_groups}
    assert lrs == {"content": (1e-4, 2), "ranker": (1e-2, 6)}


def test_plain_module_fallback_puts_the_cic_heads_with_the_ranker_like_em3model():
    from em3.training.fit import is_content_param
    assert is_content_param("content.fusion.layers.0.attn.q_proj.lora_A.history.weight")
    assert not is_content_param("cic_content_head.weight") and not is_content_param("cic_id_head.bias")
    assert not is_content_param("ranker.head.0.0.weight")
