"""scripts/step_parts.py's closing bounds: issue 12's two open targets read against measured parts."""
from __future__ import annotations

import pytest

from scripts.step_parts import bounds

PARTS = {"id_only step": 40.0, "em3 step": 160.0, "DIN's content unit forward + backward": 30.0,
         "DIN forward + backward, IDs + content": 80.0}


def test_bounds_budget_and_roofline(capsys: pytest.CaptureFixture[str]) -> None:
    # projection 4e9 bf16 FLOP at a 400e9 bf16 peak: 10 ms; the step: 8e9 bf16 + 2e9 fp32 at 400e9 / 100e9: 40 ms
    bounds(PARTS, encode_flops={"bf16": 4_000_000_000}, step_flops={"bf16": 8_000_000_000, "fp32": 2_000_000_000},
           peaks={"bf16": 400e9, "fp32": 100e9})
    out = capsys.readouterr().out
    assert "may take 80.0 ms (2 x 40.0 ms); it takes 120.0 ms (4.00x)" in out
    assert "at 100% of the 400 GFLOP/s bf16 peak: 10.0 ms" in out
    # 80 budget - 10 projection - 30 unit; 120 added - 10 - 30
    assert "the encoder beyond its projection, CIC, Adam): 40.0 ms; it takes 80.0 ms" in out
    assert "(80% bf16) take 40.0 ms at the peaks" in out
    assert "50% means a step <= 80.0 ms; it takes 160.0 ms (25%)" in out
