"""speed.compile: the compiled ranker and Fusion-Q-Former compute what the eager ones do, keep their parameter
names, train (gradients reach the LoRA adapters through the compiled fusion), and a bad value is refused."""
from __future__ import annotations

import pytest
import torch

from em3.config import ConfigError
from em3.models.compiled import compile_modules
from em3.models.em3 import build_model

pytestmark = pytest.mark.slow      # inductor compiles C++ kernels: tens of seconds on 2 cores


def _pair(config, samples, tokens, arm: str, target: str):
    torch.manual_seed(0)
    eager = build_model(config(arm), samples=samples, tokens=tokens)
    torch.manual_seed(0)
    fast = build_model(config(arm, speed__compile=target), samples=samples, tokens=tokens)
    return eager, fast


def test_compiled_em3_matches_eager_keeps_names_and_trains_the_adapters(config, samples, tokens, batch):
    eager, fast = _pair(config, samples, tokens, "em3", "both")
    assert fast.ranker._compiled_call_impl is not None and fast.content.fusion._compiled_call_impl is not None
    assert list(fast.state_dict()) == list(eager.state_dict())          # checkpoints are interchangeable
    torch.testing.assert_close(fast.eval()(batch).logits, eager.eval()(batch).logits, rtol=1e-4, atol=1e-5)
    fast.train()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(fast(batch).logits, batch["label"])
    loss.backward()
    lora = [p for n, p in fast.named_parameters() if "lora_" in n]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert all(p.grad is not None for p in fast.ranker.parameters())


def test_an_id_only_model_compiles_its_ranker_alone(config, samples, tokens):
    torch.manual_seed(0)
    model = build_model(config("id_only"), samples=samples, tokens=tokens)
    assert compile_modules(model, "both") == ["ranker"]
    with pytest.raises(ValueError, match="speed.compile"):
        compile_modules(model, "everything")


def test_a_bad_compile_value_names_the_field(config):
    with pytest.raises(ConfigError, match="speed.compile"):
        config("em3", speed__compile="yes")
