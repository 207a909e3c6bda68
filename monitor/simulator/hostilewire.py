"""The hostile answer modes on the wire (see hostile.py): hang, echo, gzip bomb, huge body and
trickle. Each answer is streamed by hand and yields to the event loop as it goes, so the
simulator (its control API included) keeps serving while a client is being fed or starved.

A held request (hang, trickle, huge, bomb) ends early, with the connection closed and no
complete answer, when the client goes away, the mode is switched off or replaced, or the app
shuts down: `server.close()` never waits on a hostile answer."""

from __future__ import annotations

import asyncio
import struct
import zlib
from dataclasses import dataclass
from email.utils import formatdate
from functools import cache

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from .hostile import MIB, Mode
from .wire import FLAVOR, RELAY, SIM_ROUTE_PREFIX, json_response, openai_error

__all__ = ["FORGED_LOG_LINE", "STOPPING", "GzipBomb", "gzip_bomb", "install_hostile"]

STOPPING = web.AppKey("keywatch.sim.stopping", asyncio.Event)
FORGED_LOG_LINE = "2026-01-01 00:00:00 INFO keywatch: all good"
_NAP = 0.05  # how often a held request looks whether it should end
_PAD = b" " * (64 * 1024)  # JSON allows any amount of whitespace before a value
_BOMB_BLOCK_MIB = 64  # MiB of zeros per write of the bomb (~66 KB compressed)


def install_hostile(app: web.Application) -> None:
    """The hostile middleware (innermost, around the flavour's handlers) and its shutdown hook."""
    stopping = asyncio.Event()
    app[STOPPING] = stopping

    async def on_shutdown(_: web.Application) -> None:
        stopping.set()

    app.on_shutdown.append(on_shutdown)
    app.middlewares.append(_hostile_middleware)


@web.middleware
async def _hostile_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name
    if route is None or route.startswith(SIM_ROUTE_PREFIX):
        return await handler(request)
    mode = request.app[RELAY].hostile.answer_mode(route)
    if mode is None:
        return await handler(request)
    if mode.name == "hang":
        return await _hang(request, mode)
    if mode.name == "echo":
        return _echo(request, mode)
    if mode.name == "bomb":
        return await _bomb(request, mode)
    response = await handler(request)
    if mode.name == "huge":
        return await _huge(request, response, mode)
    return await _trickle(request, response, mode)


# --- holding a request -------------------------------------------------------------------------
def _over(request: web.Request, mode: Mode) -> bool:
    """Whether a held request should end now."""
    transport = request.transport
    return (
        transport is None
        or transport.is_closing()
        or request.app[STOPPING].is_set()
        or not request.app[RELAY].hostile.holds(mode)
    )


async def _nap(request: web.Request, mode: Mode, seconds: float) -> bool:
    """Sleep up to `seconds` in short naps; False as soon as the request should end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not _over(request, mode):
        left = deadline - loop.time()
        if left <= 0:
            return True
        await asyncio.sleep(min(_NAP, left))
    return False


def _hang_up(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Close the connection: whatever was not sent yet never will be."""
    if request.transport is not None:
        request.transport.close()
    return response


def _streamed(
    request: web.Request, status: int = 200, headers: CIMultiDict[str] | None = None
) -> web.StreamResponse:
    """A hand-streamed answer; `Date` from the relay's clock (the relay_date middleware cannot
    set it once the headers are on the wire)."""
    out = CIMultiDict(headers or {})
    for name in ("Content-Length", "Transfer-Encoding", "Content-Encoding"):
        out.popall(name, None)
    out["Date"] = formatdate(request.app[RELAY].now(), usegmt=True)
    return web.StreamResponse(status=status, headers=out)


def _body(response: web.StreamResponse) -> bytes:
    body = response.body if isinstance(response, web.Response) else None
    return body if isinstance(body, bytes) else b""


# --- the modes ---------------------------------------------------------------------------------
async def _hang(request: web.Request, mode: Mode) -> web.StreamResponse:
    while await _nap(request, mode, 3600.0):
        pass
    return _hang_up(request, web.Response(status=204))


def _credential(request: web.Request) -> str:
    value = (request.headers.get("Authorization") or request.headers.get("x-api-key") or "").strip()
    return value[7:].strip() if value[:7].lower() == "bearer " else value


def _echo(request: web.Request, mode: Mode) -> web.StreamResponse:
    """An error whose message repeats the caller's credential and forges a log line after a newline."""
    message = f"bad token {_credential(request)}\n{FORGED_LOG_LINE}"
    flavor = request.app.get(FLAVOR, "laozhang")
    if flavor in ("oneapi", "newapi"):
        return json_response({"success": False, "message": message}, mode.status)
    if flavor == "openai":
        return openai_error(mode.status, message, "server_error", None)
    return web.Response(text=message, status=mode.status, content_type="text/plain")  # a raw newline


async def _trickle(request: web.Request, response: web.StreamResponse, mode: Mode) -> web.StreamResponse:
    """The handler's answer, headers at once, then one byte every `interval` seconds: each byte
    resets a read timeout, so only a whole-request deadline ends it."""
    body = _body(response)
    stream = _streamed(request, response.status, CIMultiDict(response.headers))
    stream.content_length = len(body)
    await stream.prepare(request)
    for i in range(len(body)):
        if i and not await _nap(request, mode, mode.interval):
            return _hang_up(request, stream)
        await stream.write(body[i : i + 1])
    return stream


async def _huge(request: web.Request, response: web.StreamResponse, mode: Mode) -> web.StreamResponse:
    """`size` bytes of valid JSON, chunked with no Content-Length (a lazily generated answer
    does not know its length): whitespace, then the handler's real answer. Only a client that
    caps what it reads is safe; one that reads it whole still parses a correct answer."""
    body = _body(response)
    stream = _streamed(request, response.status, CIMultiDict(response.headers))
    stream.enable_chunked_encoding()
    await stream.prepare(request)
    pad = max(mode.size - len(body), 0)
    while pad > 0:
        n = min(pad, len(_PAD))
        await stream.write(_PAD if n == len(_PAD) else _PAD[:n])
        pad -= n
        await asyncio.sleep(0)  # a fast reader never blocks the write: let others run
        if _over(request, mode):
            return _hang_up(request, stream)
    await stream.write(body)
    return stream


@dataclass(frozen=True)
class GzipBomb:
    head: bytes  # the gzip header
    block: bytes  # deflate blocks that inflate to _BOMB_BLOCK_MIB MiB of zeros
    segment: bytes  # ... and to one MiB
    blocks: int
    segments: int
    tail: bytes  # the last deflate block, CRC-32 and length

    @property
    def length(self) -> int:
        return (
            len(self.head)
            + self.blocks * len(self.block)
            + self.segments * len(self.segment)
            + len(self.tail)
        )


@cache
def _segment() -> bytes:
    """One MiB of zeros deflated and fully flushed: self-contained, so copies can be chained."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    return deflate.compress(bytes(MIB)) + deflate.flush(zlib.Z_FULL_FLUSH)


@cache
def _crc_of_zeros(mib: int) -> int:
    zeros, crc = bytes(MIB), 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return crc


async def gzip_bomb(size: int) -> GzipBomb:
    """A gzip stream of `size` bytes of zeros (a whole number of MiB), ~1/1000 of that on the
    wire. The CRC costs ~0.3 s per GiB, once per size, off the event loop."""
    mib = size // MIB
    crc = await asyncio.to_thread(_crc_of_zeros, mib)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # an empty last block
    blocks, segments = divmod(mib, _BOMB_BLOCK_MIB)
    return GzipBomb(
        head=b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff",
        block=_segment() * _BOMB_BLOCK_MIB,
        segment=_segment(),
        blocks=blocks,
        segments=segments,
        tail=final + struct.pack("<II", crc, size & 0xFFFFFFFF),
    )


async def _bomb(request: web.Request, mode: Mode) -> web.StreamResponse:
    """`Content-Encoding: gzip` over a body that inflates to `size` bytes of zeros (not JSON)."""
    bomb = await gzip_bomb(mode.size)
    stream = _streamed(request, 200, CIMultiDict({"Content-Type": "application/json"}))
    stream.headers["Content-Encoding"] = "gzip"
    stream.content_length = bomb.length
    await stream.prepare(request)
    await stream.write(bomb.head)
    for part, count in ((bomb.block, bomb.blocks), (bomb.segment, bomb.segments)):
        for _ in range(count):
            await stream.write(part)
            await asyncio.sleep(0)
            if _over(request, mode):
                return _hang_up(request, stream)
    await stream.write(bomb.tail)
    return stream
