"""``/v1/agent/connect/authorize``: may the client certificate's service connect to the target service?

Answered by every agent from its IntentionCache (buoy.connect.intentions), which follows the target's
intentions through the agent's own HTTP API with a blocking query: the first question about a target
costs one read (a client agent passes it to the servers), the next ones none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from buoy.connect.intentions import IntentionCache, default_for
from buoy.core.structs import agent
from buoy.http.context import AGENT, INTENTIONS
from buoy.http.decode import read_json
from buoy.http.respond import json_response

routes = web.RouteTableDef()
async def intention_cache(app: web.Application) -> AsyncIterator[None]:
    """The app's IntentionCache, for ``app.cleanup_ctx``: its watches end with the app."""
    cfg = app[AGENT].cfg
    cache = app[INTENTIONS] = IntentionCache(cfg.http_addr, default_for(cfg.intentions_default, cfg.dev))
    yield
    await cache.close()


# Consul takes POST; py-consul sends PUT, so both are answered.
@routes.post("/v1/agent/connect/authorize")
@routes.put("/v1/agent/connect/authorize")
async def authorize(request: web.Request) -> web.Response:
    target, client = agent.parse_authorize(await read_json(request))
    cache = request.app[INTENTIONS]
    decision = await cache.authorize(target, client.service, client.namespace)
    return json_response(request, agent.authorize_response(decision.allowed, decision.reason))
