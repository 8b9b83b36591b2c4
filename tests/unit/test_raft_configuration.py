"""/v1/operator/raft/configuration's body from the Raft peers and the server rows."""

from __future__ import annotations

from buoy.core.structs.raft import configuration


def test_peers_are_named_by_their_server_rows_or_their_address() -> None:
    known = {"10.0.0.1:8300": {"Node": "s0", "ID": "id-0", "HTTP": "10.0.0.1:8500"}}
    body = configuration(["10.0.0.1:8300", "10.0.0.2:8300"], known, "10.0.0.1:8300", 7)
    assert body == {"Servers": [
        {"ID": "id-0", "Node": "s0", "Address": "10.0.0.1:8300", "Leader": True, "Voter": True,
         "ProtocolVersion": "3"},
        {"ID": "10.0.0.2:8300", "Node": "10.0.0.2:8300", "Address": "10.0.0.2:8300", "Leader": False,
         "Voter": True, "ProtocolVersion": "3"},
    ], "Index": 7}
