"""The aiohttp application: routes from one module per endpoint group, each wrapped so that every
failure becomes Consul's status code and a one-line plain-text body (never a traceback)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import ModuleType

import structlog
from aiohttp import web

from buoy.api.client import APIError, ClientError
from buoy.api.signed import ReplayGuard
from buoy.core.errors import Error, Failed
from buoy.http import (
    agent_connect,
    agent_intentions,
    agent_membership,
    agent_reload,
    agent_services,
    forward,
    proxy,
)
from buoy.http.context import (
    AGENT,
    BLOCKING_FORWARDS,
    FORWARD_CLIENTS,
    KV_BODIES,
    LOOP,
    MAX_BODY,
    PRETTY,
    REPLAY_GUARD,
    AgentProcess,
    agent_of,
)
from buoy.http.decode import MAX_JSON_BODY
from buoy.http.errors import status_of

log = structlog.get_logger("buoy.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + ("\n" if text and not text.endswith("\n") else ""),
                        content_type="text/plain", headers=headers)


def guarded(handler: Handler) -> Handler:
    """Wrap a handler so that every failure becomes Consul's status and a one-line plain-text body.

    A wrapper per route rather than an aiohttp middleware: the middleware chain cost about a tenth of
    the time of a plain KV read (bench/kv.py).
    """

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            if request.query_string:
                dc = request.query.get("dc")
                if dc and dc != agent_of(request).cfg.datacenter:
                    raise Failed("No path to datacenter")
            response = await handler(request)
        except Error as e:
            response = _text(status_of(e), e.message)
        except APIError as e:  # a server's answer to a call made on the caller's behalf: passed on as is
            response = _text(e.status, e.body.strip())
        except ClientError as e:  # the servers could not be reached for that call
            response = _text(500, f"rpc error making call: {e}")
        except web.HTTPException as e:
            response = _text(e.status, e.text or e.reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error", method=request.method, path=request.path)
            response = _text(500, "Internal error (logged by the agent)")
        response.headers.setdefault("X-Consul-Default-ACL-Policy", "allow")
        return response

    return run


def _method_not_allowed(allowed: list[str]) -> Handler:
    allow = ", ".join(sorted(allowed))

    async def refuse(request: web.Request) -> web.StreamResponse:
        return _text(405, f"method {request.method} not allowed", {"Allow": allow})

    return refuse


async def _not_found(request: web.Request) -> web.StreamResponse:
    return _text(404, "404 page not found")


# Every agent answers these itself; a client agent passes every other /v1 call to a server.
AGENT_MODULES = (agent_services, agent_membership, agent_reload, agent_connect, agent_intentions)


def _server_modules() -> tuple[ModuleType, ...]:
    """The routes only a server answers, imported only on a server: they read the state store."""
    from buoy.http import catalog, connect_ca, health, intentions, internal, kv, query, session, status, txn

    return (kv, txn, session, catalog, health, query, status, internal, connect_ca, intentions)


def make_app(agent: AgentProcess) -> web.Application:
    cfg = agent.cfg
    largest = max(cfg.kv_max_value_size, cfg.txn_max_req_len, MAX_JSON_BODY)
    app = web.Application(client_max_size=largest + 1,
                          handler_args={"max_field_size": 16384})
    app[AGENT] = agent
    app[MAX_BODY] = largest
    app[PRETTY] = cfg.dev
    app[LOOP] = asyncio.get_running_loop()
    app[BLOCKING_FORWARDS] = set()
    app[FORWARD_CLIENTS] = {}
    app[KV_BODIES] = {}
    app[REPLAY_GUARD] = ReplayGuard()
    app.on_shutdown.append(proxy.release)
    app.on_cleanup.append(forward.close)
    app.cleanup_ctx.append(agent_intentions.intention_cache)
    for module in AGENT_MODULES + (_server_modules() if agent.server is not None else ()):
        for route in module.routes:
            assert isinstance(route, web.RouteDef)
            app.router.add_route(route.method, route.path, guarded(route.handler), **route.kwargs)
    for resource in list(app.router.resources()):
        assert isinstance(resource, web.Resource)
        methods = [r.method for r in resource if r.method != "HEAD"]
        # Last, so it only catches the methods the resource has no route for.
        resource.add_route("*", guarded(_method_not_allowed(methods)))
    if agent.server is None:
        app.router.add_route("*", "/v1/{tail:.*}", guarded(proxy.forward))
    app.router.add_route("*", "/{tail:.*}", guarded(_not_found))
    return app


async def serve(agent: AgentProcess, hosts: list[str], port: int, grace: float) -> Callable[[], Awaitable[None]]:
    """Listen on ``port`` of every host; returns the cleanup that stops the app, giving open requests (blocking
    queries among them) ``grace`` seconds to finish."""
    runner = web.AppRunner(make_app(agent), access_log=None, handle_signals=False, shutdown_timeout=grace)
    await runner.setup()
    for host in hosts:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner.cleanup
