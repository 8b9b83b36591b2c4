"""Raft for Buoy's servers: pysyncobj 0.3.17 (pinned), made safe, durable and fast.

What this package changes in pysyncobj, and why (measurements in shared/reference/pysyncobj.md):

- **Truncation fix** (``syncobj.SafeSyncObj``): pysyncobj's follower deletes entries after
  ``prevLogIdx`` without comparing terms, so duplicate AppendEntries cut acknowledged entries; a
  leader failure at that moment can lose committed writes. The override skips entries already held
  with the same term and keeps the leader's ``nextIndex`` from moving backwards.
- **Durable journal** (``journal.DurableJournal``): append-only, CRC-checked msgpack records with
  fdatasync before a follower acknowledges (``transport.SyncingTransport``) and before the leader
  applies or advertises a commit; term and vote are replaced with fsync + rename + directory fsync
  before pysyncobj sends a vote. An acknowledged write survives ``kill -9`` of every server (and
  power loss, as far as fdatasync is honoured).
- **Snapshots** (``snapshot``): msgpack ``{"version": 1, "raft": [...], "state": fsm.dump()}``,
  fsynced, instead of pickle+gzip of the whole object. Nothing else is persisted: state is the
  snapshot plus the journal replayed up to the commit index.
- **Application-level batching** (``node.RaftNode.apply``): commands proposed in the same loop
  iteration travel as one log entry and one ``apply_batch`` call (<= 256 commands or 1 MiB, up to
  4 batches in flight), which amortises the per-entry pickling, encryption and fdatasync.

Settings (``settings.RaftSettings``) and why:

- ``appendEntriesUseBatch=False``: entries leave as soon as they are proposed (pysyncobj's batch
  mode waits for the 100 ms heartbeat tick). Safe only with the truncation fix, which is always on.
- Election timeout 1.0-2.0 s, heartbeat 0.1 s, leader steps down after 2.0 s without a majority:
  Consul's LAN production timing. The Raft thread also applies entries and writes snapshots (tens
  of ms per 100,000 keys); a follower stalled past the election timeout would start an election
  the moment it wakes, so the timeout leaves room for that. A node alone in its configuration
  (``-dev``) elects itself at the first tick, about 0.1 s after construction.
- Reconnect every 0.5 s (pysyncobj: 5 s) so a restarted server rejoins quickly.
- ``password`` always set: pysyncobj unpickles peer frames, and Fernet authenticates each frame
  before that; construction refuses an empty key. The Raft port binds ``self_addr`` only. A peer
  that has not yet sent a frame passing Fernet's HMAC may not make the node buffer more than 1 MiB
  (pysyncobj believes any declared frame length); later frames are capped at 256 MiB.
- ``dynamicMembershipChange=True``; pysyncobj's one-change-at-a-time guard is dead code, so
  ``add_member``/``remove_member`` serialize changes themselves.
- Compaction at 200,000 entries or 600 s (pysyncobj: 5,000 / 300 s), or when the journal exceeds
  256 MiB: each snapshot serializes the whole state on the Raft thread.
- AppendEntries may carry up to max(batch, command limit) + 64 KiB so that no entry is ever split
  into pysyncobj's chunked transmission, which would bypass the truncation fix.
- The tick thread (``autoTick``) runs Raft; the asyncio loop only proposes and receives results
  through ``call_soon_threadsafe``. Driving ``doTick`` from the loop measured slower.
"""

from .errors import RaftError
from .fsm import StateMachine
from .node import RaftNode
from .settings import RaftSettings

__all__ = ["RaftError", "RaftNode", "RaftSettings", "StateMachine"]
