"""``PUT /v1/agent/reload``: the agent reads its config files again (as on SIGHUP). A configuration that does
not build is answered with 500 and its one-line error, as Consul does, and the agent keeps the last good one."""

from __future__ import annotations

from aiohttp import web

from buoy.config import ConfigError
from buoy.core.errors import Failed
from buoy.http.context import agent_of

routes = web.RouteTableDef()


@routes.put("/v1/agent/reload")
async def agent_reload(request: web.Request) -> web.Response:
    try:
        agent_of(request).reload()
    except ConfigError as e:
        raise Failed(str(e)) from None
    return web.Response()
