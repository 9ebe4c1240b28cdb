"""One ledger process following several chains (DESIGN.md section 6: a chain per community,
one ordering cluster for them all).

Each chain's node (`LedgerNode`, its own store, sequencer and key) is served by its own
application (`ledger.api.create_app`) under `/chains/<chain id>`: `/chains/<id>/v1/...` is
that chain's API exactly as a node of that chain alone serves it under `/v1`, so a client is
pointed at a chain by its URL (`LedgerClient("http://node/chains/<id>")`). The process
answers at its root:

- `GET /chains`: the chains it follows (id, name, path, height, tree size), however many;
- `GET /healthz` and `GET /readyz`, the latter over every chain's checks (a chain that cannot
  work makes the process not ready: a load balancer sends its clients to another node);
- with one chain only, everything else as that chain's application (`/v1`, as before);
  with several, 404 `not_found` naming where the chains are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ledger.api import LedgerNode, create_app
from service.health import Check, install_health
from service.http import (
    NO_TELEMETRY,
    ApiError,
    DirectRoute,
    direct_routes,
    install_error_handlers,
    send_error,
    send_json,
)

PREFIX = "/chains/"


def chain_path(node: LedgerNode) -> str:
    """Where `node`'s chain is served: `/chains/<chain id>` (its API under `/v1` below)."""
    return f"{PREFIX}{node.ledger.chain.hex()}"


class ChainRouter:
    """A pure ASGI application sending each request under `/chains/<id>` to that chain's
    application, with the prefix taken off its path (so each chain's routes, middleware
    and error answers are those of a node serving it alone), and every other request to
    `root` (by default the one chain's own application). It runs the process's lifespan:
    every node is bound to the serving loop."""

    def __init__(self, nodes: Sequence[LedgerNode], root: ASGIApp | None = None) -> None:
        self.nodes = list(nodes)
        self.apps = {chain_path(node): create_app(node) for node in self.nodes}
        if root is None:
            [root] = self.apps.values()  # one chain: answered under /v1 too
        self.root = root

    def direct_routes(self) -> dict[str, DirectRoute]:
        """Each chain's routes its server answers itself (`service.http.DirectRoute`), under
        its path, and the root's as they are."""
        routes = direct_routes(self.root)
        for prefix, app in self.apps.items():
            routes |= {prefix + path: route for path, route in direct_routes(app).items()}
        return routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        if path == "/chains" and scope["type"] == "http":
            await send_json(send, 200, {"chains": [_chain_entry(node) for node in self.nodes]})
            return
        if path.startswith(PREFIX):
            prefix = path[: len(PREFIX) + 64]
            app = self.apps.get(prefix)
            rest = path[len(prefix) :]
            if app is None or (rest and not rest.startswith("/")):
                await send_error(send, _no_chain(path))
                return
            scope = {
                **scope,
                "path": rest or "/",
                "raw_path": (rest or "/").encode(),
                "root_path": scope.get("root_path", "") + prefix,
            }
            await app(scope, receive, send)
            return
        await self.root(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                for node in self.nodes:
                    node.bind(loop)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _no_chain(path: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"{path} names no chain this node follows: a chain is served under "
        "/chains/<chain id, 64 hex digits>/v1; GET /chains lists them",
    )


def create_chains_app(nodes: Sequence[LedgerNode]) -> ChainRouter:
    """The application serving every chain of `nodes` (one node per chain) under
    `/chains/<id>`; with one chain, also under `/v1` as `create_app` serves it."""
    chains = [node.ledger.chain for node in nodes]
    if len(set(chains)) != len(chains):
        raise ValueError("two of the nodes follow the same chain")
    if len(nodes) == 1:
        return ChainRouter(nodes)
    root = FastAPI(
        title="PETra ledger node (several chains)",
        version="1",
        description="Each chain's ledger API is under /chains/<chain id>/v1.",
        telemetry=NO_TELEMETRY,
    )
    install_error_handlers(root)
    checks: dict[str, Check] = {
        f"{node.ledger.chain.hex()[:16]} {name}": check
        for node in nodes
        for name, check in node.checks().items()
    }
    install_health(root, checks)

    @root.api_route(
        "/{path:path}",
        methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
        include_in_schema=False,
    )
    def elsewhere(path: str) -> None:
        raise ApiError(
            404,
            "not_found",
            f"this node follows {len(nodes)} chains: each is served under "
            "/chains/<chain id>/v1 (GET /chains lists them), not under /" + path,
        )

    return ChainRouter(nodes, root)


def _chain_entry(node: LedgerNode) -> dict[str, Any]:
    head = node.ledger.durable_head
    return {
        "chain": node.ledger.chain.hex(),
        "name": node.ledger.genesis.name,
        "path": f"{chain_path(node)}/v1",
        "height": 0 if head is None else head.header.height,
        "tree_size": 0 if head is None else head.header.tree_size,
    }
