"""Serving a simulated relay over HTTP: build the app for a flavour, bind it, run it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .control import add_control_routes
from .hostilewire import install_hostile
from .laozhang import LaozhangOptions, add_laozhang_routes
from .model import DEFAULT_ADMIN_TOKEN, SimulatedRelay, make_relay
from .newapi import NewAPIOptions, add_newapi_routes
from .oneapi import OneAPIOptions, add_oneapi_routes
from .openai import OpenAIOptions, add_openai_routes
from .wire import CALLERS, FLAVOR, OPTIONS, RELAY, caller_middleware, fault_middleware, relay_date

__all__ = ["FLAVORS", "SimServer", "build_app", "parse_listen", "run_simulator", "serve"]


def _laozhang(app: web.Application, relay: SimulatedRelay, options: dict[str, Any]) -> object:
    opts = LaozhangOptions(**options)
    add_laozhang_routes(app, relay, opts)
    return opts


def _oneapi(app: web.Application, relay: SimulatedRelay, options: dict[str, Any]) -> object:
    opts = OneAPIOptions(**options)
    add_oneapi_routes(app, relay, opts)
    return opts


def _newapi(app: web.Application, relay: SimulatedRelay, options: dict[str, Any]) -> object:
    opts = NewAPIOptions(**options)
    add_newapi_routes(app, relay, opts)
    return opts


def _openai(app: web.Application, relay: SimulatedRelay, options: dict[str, Any]) -> object:
    opts = OpenAIOptions(**options)
    add_openai_routes(app, relay, opts)
    return opts


def _litellm(app: web.Application, relay: SimulatedRelay, options: dict[str, Any]) -> object:
    from .litellm import LiteLLMOptions, add_litellm_routes

    opts = LiteLLMOptions(**options)
    add_litellm_routes(app, relay, opts)
    return opts


def _openrouter(app: web.Application, relay: SimulatedRelay, options: dict[str, Any]) -> object:
    from .openrouter import OpenRouterOptions, add_openrouter_routes

    opts = OpenRouterOptions(**options)
    add_openrouter_routes(app, relay, opts)
    return opts


def _anthropic(app: web.Application, relay: SimulatedRelay, options: dict[str, Any]) -> object:
    from .anthropic import AnthropicOptions, add_anthropic_routes

    opts = AnthropicOptions(**options)
    add_anthropic_routes(app, relay, opts)
    return opts


# flavour -> installs its routes and returns its options object (settable via /_sim/options)
FLAVORS: dict[str, Callable[[web.Application, SimulatedRelay, dict[str, Any]], object]] = {
    "laozhang": _laozhang,
    "oneapi": _oneapi,
    "newapi": _newapi,
    "openai": _openai,
    "litellm": _litellm,
    "openrouter": _openrouter,
    "anthropic": _anthropic,
}


def build_app(relay: SimulatedRelay, *, flavor: str = "laozhang", **options: Any) -> web.Application:
    """The flavour's API plus the /_sim/ control API. `options` go to the flavour's options
    dataclass (LaozhangOptions, OneAPIOptions, NewAPIOptions, OpenAIOptions)."""
    install = FLAVORS.get(flavor)
    if install is None:
        raise ValueError(f"unknown flavor {flavor!r}; known: {', '.join(sorted(FLAVORS))}")
    # outermost first: the relay's clock in Date, injected faults, then hostile answers
    app = web.Application(middlewares=[caller_middleware, relay_date(relay), fault_middleware])
    app[CALLERS] = {}
    install_hostile(app)
    app[RELAY] = relay
    app[FLAVOR] = flavor
    app[OPTIONS] = install(app, relay, options)
    add_control_routes(app, relay)
    return app


@dataclass(frozen=True)
class SimServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(
    relay: SimulatedRelay, host: str = "127.0.0.1", port: int = 0, *, flavor: str = "laozhang", **options: Any
) -> SimServer:
    """Start serving; port 0 picks a free one (see `.port`). Stop with `await server.close()`."""
    runner = web.AppRunner(build_app(relay, flavor=flavor, **options), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return SimServer(runner, host, int(bound))


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    host = host.strip("[]") or "0.0.0.0"  # an explicit ":PORT" asks for all interfaces
    return host, int(port)


async def run_simulator(
    listen: str,
    tokens: int,
    seed: int,
    flavor: str = "laozhang",
    *,
    tz: str = "UTC",
    speed: float = 1.0,
    idle_fraction: float = 0.15,
    admin_token: str = DEFAULT_ADMIN_TOKEN,
    on_ready: Callable[[SimServer, SimulatedRelay], None] | None = None,
    **options: Any,
) -> None:
    """Serve a fresh relay until cancelled. Simulated time follows the wall clock (x `speed`);
    each request brings the tokens it reads up to that time. `on_ready(server, relay)` runs once
    bound (e.g. to print `server.url`, `relay.admin_token`). `options` go to the flavour."""
    host, port = parse_listen(listen)
    relay = make_relay(
        tokens=tokens, seed=seed, tz=tz, speed=speed, idle_fraction=idle_fraction, admin_token=admin_token
    )
    server = await serve(relay, host, port, flavor=flavor, **options)
    try:
        if on_ready is not None:
            on_ready(server, relay)
        await asyncio.Event().wait()
    finally:
        await server.close()
