"""The aiohttp application: routes from one module per endpoint group, and the middleware that turns
every failure into Consul's status code and a one-line plain-text body (never a traceback)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from buoy.http import catalog, forward, health, internal, kv, session, status, txn
from buoy.http.decode import MAX_JSON_BODY
from buoy.http.errors import HTTPError
from buoy.server.raft import RaftError

log = structlog.get_logger("buoy.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + ("\n" if text and not text.endswith("\n") else ""),
                        content_type="text/plain", headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        dc = request.query.get("dc")
        if dc and dc != request.app["agent"].cfg.datacenter:
            raise HTTPError(500, "No path to datacenter")
        response = await handler(request)
    except HTTPError as e:
        response = _text(e.status, e.text)
    except RaftError as e:
        response = _text(500, str(e))
    except web.HTTPMethodNotAllowed as e:
        response = _text(405, f"method {request.method} not allowed", {"Allow": ", ".join(sorted(e.allowed_methods))})
    except web.HTTPRequestEntityTooLarge as e:
        response = _text(413, e.text or "Request body too large")
    except web.HTTPException as e:
        response = _text(e.status, e.text or e.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error", method=request.method, path=request.path)
        response = _text(500, "Internal error (logged by the agent)")
    response.headers.setdefault("X-Consul-Default-ACL-Policy", "allow")
    return response


def make_app(agent: Any) -> web.Application:
    cfg = agent.cfg
    largest = max(cfg.kv_max_value_size, cfg.txn_max_req_len, MAX_JSON_BODY)
    app = web.Application(middlewares=[errors], client_max_size=largest + 1,
                          handler_args={"max_field_size": 16384})
    app["agent"] = agent
    app["pretty"] = agent.cfg.dev
    app["loop"] = asyncio.get_event_loop()
    app.on_cleanup.append(forward.close)
    for module in (kv, txn, session, catalog, health, status, internal):
        app.router.add_routes(module.routes)
    return app
