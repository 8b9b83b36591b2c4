"""Raft layer alone: closed-loop writers calling RaftNode.apply() inside the leader's process, on a
3-node cluster of subprocesses (the test harness of tests/integration/test_raft_cluster.py), with the
durable journal and with an in-memory one. 64-byte values over 1000 keys.

    python -m bench.raft [--seconds 6]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.integration.test_raft_cluster import Cluster


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raft")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    print(f"{'journal':<8} {'writers':>7} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for journal in ("durable", "memory"):
        with tempfile.TemporaryDirectory() as root:
            cluster = Cluster(Path(root), memory=journal == "memory")
            cluster.start()
            try:
                leader = cluster.leader()
                for writers in (1, 16, 256):
                    stats = leader.result("bench", timeout=args.seconds + 30, writers=writers, seconds=args.seconds)
                    print(f"{journal:<8} {writers:>7} {stats['writes_per_s']:>10.0f} {stats['p50_ms']:>8.2f} "
                          f"{stats['p99_ms']:>8.2f}")
            finally:
                cluster.shutdown()


if __name__ == "__main__":
    main()
