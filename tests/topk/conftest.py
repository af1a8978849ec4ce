"""Fixtures of the top-K tests."""
from __future__ import annotations

import pytest
from topk_fakes import planted_data

from em3.topk.data import TopKData


@pytest.fixture
def planted() -> TopKData:
    return planted_data()
