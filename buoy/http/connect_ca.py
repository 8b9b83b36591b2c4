"""``/v1/connect/ca``: the mesh CA's roots (blocking, or a PEM bundle with ``?pem``) and its configuration.

Reads return Consul's ``IndexedCARoots`` and ``CAConfiguration``; nothing here ever returns the roots'
private key. A PUT of the configuration may rotate the root (see :mod:`buoy.server.ca`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from buoy.core.errors import Failed, Invalid
from buoy.core.structs import ca
from buoy.http.blocking import blocking
from buoy.http.context import server_of
from buoy.http.decode import read_json
from buoy.http.respond import Raw

if TYPE_CHECKING:
    from buoy.server.state.store import StateStore

routes = web.RouteTableDef()

# Go's strconv.ParseBool, which Consul uses for ?pem.
_TRUE, _FALSE = {"1", "t", "T", "TRUE", "true", "True"}, {"0", "f", "F", "FALSE", "false", "False", ""}


def _roots(s: StateStore) -> tuple[int, tuple[str, list[dict[str, Any]]]]:
    return s.ca.index, (s.ca.trust_domain, s.ca.roots)


def _pem_bundle(view: tuple[str, list[dict[str, Any]]]) -> Raw:
    pems = [p for r in view[1] for p in (r["RootCert"], *r["IntermediateCerts"])]
    return Raw("".join(p if p.endswith("\n") else p + "\n" for p in pems).encode(),
               "application/pem-certificate-chain")


@routes.get("/v1/connect/ca/roots")
async def roots(request: web.Request) -> web.Response:
    flag = request.query.get("pem", "")
    if flag not in _TRUE | _FALSE:
        raise Invalid("The 'pem' query parameter must be a boolean value")
    return await blocking(request, _roots, topics=[("ca",)], encode=_pem_bundle if flag in _TRUE else ca.roots_to_api)


@routes.get("/v1/connect/ca/configuration")
async def get_configuration(request: web.Request) -> web.Response:
    def compute(s: StateStore) -> tuple[int, Any]:
        doc = s.ca.config
        if doc is None:
            raise Failed("CA has not finished initializing")
        return doc["ModifyIndex"], doc

    return await blocking(request, compute, topics=[("ca",)], encode=ca.config_to_api)


@routes.put("/v1/connect/ca/configuration")
async def set_configuration(request: web.Request) -> web.Response:
    provider, config, force, state = ca.decode_configuration(await read_json(request))
    await server_of(request).duties.ca.configure(provider, config, force, state)
    return web.Response()
