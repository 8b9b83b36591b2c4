"""Every tunable of the Raft layer with its default, and how it becomes a pysyncobj configuration.

The reasons behind the defaults are in the package docstring (``buoy.server.raft``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pysyncobj import SyncObjConf


@dataclass(frozen=True)
class RaftSettings:
    # Timing (seconds).
    election_timeout_min: float = 1.0
    election_timeout_max: float = 2.0
    heartbeat_interval: float = 0.1
    leader_lease_timeout: float = 2.0
    connection_timeout: float = 3.5
    reconnect_interval: float = 0.5
    tick_period: float = 0.05
    apply_timeout: float = 10.0
    # Application-level batching.
    batch_max_commands: int = 256
    batch_max_bytes: int = 1 << 20
    batches_in_flight: int = 4
    max_command_bytes: int = 4 << 20
    # Snapshots and log compaction.
    compaction_min_entries: int = 200_000
    compaction_min_time: float = 600.0
    journal_max_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if not 0 < self.election_timeout_min < self.election_timeout_max:
            raise ValueError("election timeouts must satisfy 0 < min < max")
        if self.election_timeout_min <= 3 * self.heartbeat_interval:
            raise ValueError("election_timeout_min must exceed three heartbeat intervals")
        if self.batch_max_commands < 1 or self.batches_in_flight < 1:
            raise ValueError("batch_max_commands and batches_in_flight must be positive")


def syncobj_conf(
    settings: RaftSettings,
    *,
    bind_address: str,
    password: str,
    dump_file: str,
    serializer: Callable[[str, Any], None],
    deserializer: Callable[[str], Any],
    on_state_changed: Callable[[int, int], None],
) -> SyncObjConf:
    # A whole batch must always travel in one AppendEntries: pysyncobj's chunked path for bigger
    # entries bypasses the truncation fix in syncobj.py.
    max_entry = max(settings.batch_max_bytes, settings.max_command_bytes) + (64 << 10)
    return SyncObjConf(
        password=password,
        bindAddress=bind_address,
        autoTick=True,
        autoTickPeriod=settings.tick_period,
        appendEntriesUseBatch=False,
        appendEntriesPeriod=settings.heartbeat_interval,
        appendEntriesBatchSizeBytes=max_entry,
        raftMinTimeout=settings.election_timeout_min,
        raftMaxTimeout=settings.election_timeout_max,
        leaderFallbackTimeout=settings.leader_lease_timeout,
        connectionTimeout=max(settings.connection_timeout, settings.election_timeout_max),
        connectionRetryTime=settings.reconnect_interval,
        sendBufferSize=1 << 20,
        recvBufferSize=1 << 20,
        commandsWaitLeader=True,
        dynamicMembershipChange=True,
        fullDumpFile=dump_file,
        serializer=serializer,
        deserializer=deserializer,
        logCompactionMinEntries=settings.compaction_min_entries,
        logCompactionMinTime=settings.compaction_min_time,
        onStateChanged=on_state_changed,
        # Fail at construction instead of retrying a taken port forever in the background.
        maxBindRetries=1,
    )
