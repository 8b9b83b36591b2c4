"""gRPC checks: the standard health protocol (``grpc.health.v1.Health/Check``) against
``GRPC: "host:port[/service]"``, in cleartext unless ``GRPCUseTLS``. SERVING is passing; any other
status, or a failed call, is critical, with Consul's output."""

from __future__ import annotations

import os
from typing import Any

from buoy.agent.checks.probe import Kind


def _go_code(name: str) -> str:
    """A status code as Go's gRPC prints it in errors (DEADLINE_EXCEEDED -> DeadlineExceeded)."""
    return "".join(word.capitalize() for word in name.split("_"))


async def probe(d: dict[str, Any], timeout: float) -> tuple[str, str]:
    # Imported here: grpcio is large and most agents never run a gRPC check. Its fork handlers are for
    # children that go on using gRPC; script checks exec at once, and the handlers only log warnings.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = d["GRPC"]
    server, _, service = target.partition("/")
    if d.get("GRPCUseTLS"):
        name = d.get("TLSServerName")
        channel = grpc.aio.secure_channel(server, grpc.ssl_channel_credentials(),
                                          options=[("grpc.ssl_target_name_override", name)] if name else None)
    else:
        channel = grpc.aio.insecure_channel(server)
    async with channel:
        try:
            resp = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            return "critical", f"rpc error: code = {_go_code(e.code().name)} desc = {e.details() or ''}"
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        return "critical", f"gRPC {target} serving status: {status}"
    return "passing", f"gRPC check {target}: success"


KIND = Kind(probe)
