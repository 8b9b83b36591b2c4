"""``PUT /v1/txn``: atomic KV operations (Consul's verbs); 200 with results, or 409 with errors and
nothing applied."""

from __future__ import annotations

from aiohttp import web

from buoy.core.commands import Txn
from buoy.core.decode import json_value
from buoy.core.errors import Invalid
from buoy.core.structs import kv
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_body
from buoy.http.respond import json_response

routes = web.RouteTableDef()


@routes.put("/v1/txn")
async def txn(request: web.Request) -> web.Response:
    agent = agent_of(request)
    raw = await read_body(request, agent.cfg.txn_max_req_len)
    try:
        data = json_value(raw) if raw.strip() else None
    except ValueError as e:
        raise Invalid(f"Failed to parse body: {e}") from None
    result = await server_of(request).apply(Txn(ops=kv.txn_ops(data)))
    if "errors" in result:
        return json_response(request, kv.txn_failed(result["errors"]), status=409)
    answer, index = kv.txn_done(result["results"])
    return json_response(request, answer, headers={"X-Consul-Index": str(index)})
