"""``PUT /v1/txn``: atomic KV operations (Consul's verbs); 200 with results, or 409 with errors and
nothing applied."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from buoy.core.commands import Txn
from buoy.core.decode import Fields
from buoy.core.errors import Invalid, TooLarge
from buoy.core.structs import kv
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_body
from buoy.http.respond import json_response

routes = web.RouteTableDef()

MAX_OPS = 128
KV_VERBS = {"set", "cas", "lock", "unlock", "get", "get-or-empty", "get-tree", "check-index", "check-session",
            "check-not-exists", "delete", "delete-tree", "delete-cas"}
KV_FIELDS = {"Verb", "Key", "Value", "Flags", "Index", "Session", "Namespace", "Partition"}


def _kv_op(i: int, data: Any) -> dict[str, Any]:
    f = Fields(data, f"Operations[{i}].KV", KV_FIELDS)
    verb = f.str("Verb")
    if verb not in KV_VERBS:
        raise Invalid(f"Operations[{i}].KV: unknown verb {verb!r}")
    key = f.str("Key")
    if key.startswith("/"):
        raise Invalid(f"Operations[{i}].KV: keys must not begin with '/'")
    try:
        value = base64.b64decode(f.str("Value"), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"Operations[{i}].KV.Value: not valid base64") from None
    return {"Verb": verb, "Key": key, "Value": value, "Flags": f.int("Flags"), "Index": f.int("Index"),
            "Session": f.str("Session")}


@routes.put("/v1/txn")
async def txn(request: web.Request) -> web.Response:
    agent = agent_of(request)
    raw = await read_body(request, agent.cfg.txn_max_req_len)
    try:
        data = json.loads(raw) if raw.strip() else None
    except ValueError as e:
        raise Invalid(f"Failed to parse body: {e}") from None
    if not isinstance(data, list):
        raise Invalid("Failed to parse body: expected a JSON list of operations")
    if len(data) > MAX_OPS:
        raise TooLarge(f"Transaction contains too many operations ({len(data)} > {MAX_OPS})")
    ops = []
    for i, item in enumerate(data):
        f = Fields(item, f"Operations[{i}]", {"KV", "Node", "Service", "Check"})
        if f.obj("KV") is None:
            raise Invalid(f"Operations[{i}]: only KV operations are supported")
        ops.append(_kv_op(i, f.obj("KV")))
    result = await server_of(request).apply(Txn(ops=ops))
    if "errors" in result:
        return json_response(request, {"Results": None, "Errors": result["errors"]}, status=409)
    results = [{"KV": kv.to_api(r["KV"])} for r in result["results"]]
    return json_response(request, {"Results": results, "Errors": None},
                         headers={"X-Consul-Index": str(max((r["KV"]["ModifyIndex"] for r in results),
                                                                default=0))})
