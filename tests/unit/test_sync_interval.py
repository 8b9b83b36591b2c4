"""The full anti-entropy interval grows with the cluster as Consul's aeScale does."""

from __future__ import annotations

import pytest

from buoy.agent.sync import AntiEntropy
from buoy.config import Config


@pytest.mark.parametrize(("nodes", "factor"), [(1, 1), (128, 1), (129, 2), (256, 2), (257, 3), (4096, 6)])
def test_interval_scales_with_cluster_size(nodes: int, factor: int) -> None:
    sync = AntiEntropy(Config(ae_interval=60.0), "id", local=None, catalog=None)  # type: ignore[arg-type]
    sync.cluster_size = nodes
    assert sync.interval() == 60.0 * factor
