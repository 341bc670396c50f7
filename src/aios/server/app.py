"""The FastAPI app over a Kernel, and ``serve`` which runs it with uvicorn and reports the URL once bound."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from aios import __version__
from aios.server.auth import BearerAuth, auth_required as needs_auth, is_loopback
from aios.server.origin import SameOrigin
from aios.access.manager import ADMIN
from aios.errors import Forbidden, KernelError
from aios.jsonvalues import MAX_JSON_DEPTH
from aios.kernel import Kernel
from aios.llm.handler import LLMQuery
from aios.server.asgi import OPENAI_PREFIX, openai_error
from aios.server.calls import StreamedCall, until_done_or_disconnected
from aios.server.limits import MB, BodyLimit
from aios.server.access_routes import router as access_router
from aios.server.core_routes import router as core_router
from aios.server.agent_routes import router as agent_router
from aios.server.hub_routes import router as hub_router
from aios.server.memory_routes import memory_request
from aios.server.openai_routes import router as openai_router
from aios.server.scheduler_routes import router as scheduler_router
from aios.server.storage_routes import router as storage_router
from aios.server.storage_routes import storage_request
from aios.server.tool_routes import router as tool_router
from aios.server.tool_routes import tool_calls_of
from aios.server.ui_routes import router as ui_router
from aios.server.wire import (
    JSON_VALUE_ERROR,
    LLMQueryData,
    QueryRequest,
    envelope,
    query_data_as,
    refusal,
)
from aios.syscall import SyscallKind

log = logging.getLogger(__name__)


def create_app(kernel: Kernel, host: str) -> FastAPI:
    """The HTTP app for a kernel served on ``host``; its lifespan starts and stops the kernel's scheduler. Where
    the access settings require tokens there (``access.auth``), every route but the share links needs one."""
    auth_required = needs_auth(kernel.config.access.auth, host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await kernel.start()
        try:
            yield
        finally:
            await kernel.stop()

    app = FastAPI(title="AIOS kernel", version=__version__, lifespan=lifespan)
    app.state.kernel = kernel
    app.state.auth_required = auth_required
    app.state.exit = None  # set by serve(): how /core/cleanup stops the server
    app.add_middleware(BodyLimit, max_bytes=int(kernel.config.server.max_body_mb * MB))
    # Web pages' requests are refused before their bodies are read; inside BearerAuth, which takes the token out
    # of a /as/<token>/ path (so that a refusal under /v1/ has OpenAI's shape). Where no token is required, a
    # kernel on loopback is for this machine's programs, whatever access.auth says.
    app.add_middleware(SameOrigin, served_host=host if not auth_required and is_loopback(host) else None,
                       public_url=kernel.config.storage.public_url)
    app.add_middleware(BearerAuth, access=kernel.access, required=auth_required)
    app.include_router(storage_router)
    app.include_router(tool_router)
    app.include_router(access_router)
    app.include_router(core_router)
    app.include_router(openai_router)
    app.include_router(agent_router)
    app.include_router(hub_router)
    app.include_router(scheduler_router)
    app.include_router(ui_router)

    @app.exception_handler(KernelError)
    async def kernel_error(request: Request, exc: KernelError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": str(exc)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # A body that parses as no JSON a kernel can take is the client's to fix, like any other invalid body:
        # 422 naming the problem (FastAPI answers a vague 400 for what its JSON decoder raises beyond syntax).
        why = _unparsable(exc.__cause__)
        if why is not None:
            return JSONResponse(status_code=422, content={"detail": [{"loc": ["body"], "msg": why,
                                                                      "type": "json_invalid"}]})
        if request.url.path.startswith(OPENAI_PREFIX):  # an unknown route or method there: OpenAI's clients read
            return JSONResponse(status_code=exc.status_code, headers=exc.headers,  # its error object
                                content=openai_error(exc.status_code, _not_served(request, exc)))
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and why, without echoing the input back: it may not even be valid JSON to send (NaN).
        return JSONResponse(status_code=422, content={"detail": [_located(e) for e in exc.errors()]})

    @app.post("/query", response_model=None)
    async def query(body: QueryRequest, request: Request) -> dict[str, Any] | Response:
        """Run one syscall for an agent and reply with the AIOS envelope: HTTP 200 whenever the body parsed,
        with the envelope's ``error`` and ``status_code`` saying why a syscall was refused or failed (the AIOS SDK
        raises on any other HTTP status before reading the body, so this is how an agent learns why)."""
        kind = SyscallKind(body.query_type)
        try:
            payload, priority, stream = _payload(kind, body, request)
            await _acting_as(body.agent_name, request)
            if stream:
                return await _streamed_envelope(StreamedCall(kernel, request), body.agent_name, payload, priority)
            syscall = await until_done_or_disconnected(kernel.call(kind, body.agent_name, payload, priority), request)
        except KernelError as exc:  # refused: a value the kernel does not take, unknown model or tool, ...
            return refusal(kind, exc)
        if syscall is None:  # the client hung up; its syscall was cancelled and nobody reads this reply
            return Response(status_code=499)
        return envelope(syscall)

    @app.get("/status")
    async def status() -> dict[str, Any]:
        inactive = [name for name, state in kernel.components().items() if state != "active"]
        down = kernel.models_down()
        base = {"version": __version__, **kernel.status()}
        if not inactive and not down:
            return {"status": "ok", "message": "All core components are active.", **base}
        problems = [f"some components are inactive: {', '.join(inactive)}"] if inactive else []
        problems += [f"models down: {', '.join(down)}"] if down else []
        return {
            "status": "warning",
            "message": f"Server is running, but {'; '.join(problems)}",
            "inactive_components": inactive,
            **({"models_down": down} if down else {}),
            **base,
        }

    @app.get("/core/status")
    async def core_status() -> dict[str, str]:
        return kernel.components()

    return app


def _payload(kind: SyscallKind, body: QueryRequest, request: Request) -> tuple[Any, int, bool]:
    """What ``body`` asks the kernel to run, its priority, and whether to stream the reply. A malformed
    ``query_data`` raises RequestValidationError (a 422); a value the kernel refuses (out of its field's range)
    raises BadRequest, which ``/query`` answers in the envelope like any other refusal."""
    if kind is SyscallKind.LLM:
        llm_data = query_data_as(LLMQueryData, body.query_data, "llm")
        return llm_data.to_query(), llm_data.priority, llm_data.stream
    if kind is SyscallKind.STORAGE:
        return storage_request(body.query_data, request), 0, False
    if kind is SyscallKind.MEMORY:
        return memory_request(body.query_data), 0, False
    return tool_calls_of(body.query_data), 0, False


async def _streamed_envelope(call: StreamedCall, agent: str, query: LLMQuery, priority: int) -> StreamingResponse:
    """``/query`` with ``stream: true``: NDJSON, one ``{"delta": text}`` line per piece of the reply as it is
    decoded, then the envelope (as without streaming) on the last line."""
    await call.submit(agent, query, priority)

    async def lines() -> AsyncIterator[str]:
        async for piece in call.pieces():
            yield json.dumps({"delta": piece}, ensure_ascii=False) + "\n"
        if call.syscall is not None and call.syscall.done:  # else the client is gone
            yield json.dumps(envelope(call.syscall), ensure_ascii=False) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _acting_as(agent_name: str, request: Request) -> None:
    """A token makes syscalls only as its own agent (the administrator's, as any); only the administrator's token
    acts as the administrator, whose name reaches every agent's resources without a grant; and without a token, a
    request may not act as an agent that has one."""
    identity = request.scope.get("state", {}).get("identity")
    if identity not in (None, ADMIN, agent_name):
        raise Forbidden(f"this bearer token is agent {identity!r}'s: it cannot make syscalls as {agent_name!r}")
    if agent_name == ADMIN and identity != ADMIN:
        raise Forbidden(f"{ADMIN!r} is the administrator's identity: it needs the administrator's token")
    await request.app.state.kernel.access.check_claim(identity, agent_name)


def _located(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error as ``{loc, msg, type}``; one found while walking the raw body (too deep, not Unicode)
    is located where it was found, not at the body as a whole."""
    loc, msg = list(error.get("loc", ())), error.get("msg")
    if error.get("type") == JSON_VALUE_ERROR:
        loc, msg = [*loc, *error["ctx"]["path"]], error["ctx"]["what"]
    return {"loc": loc, "msg": msg, "type": error.get("type")}


def _not_served(request: Request, exc: HTTPException) -> str:
    return (f"{exc.detail}: {request.method} {request.url.path}. The OpenAI-compatible API here serves "
            "POST /v1/chat/completions, GET /v1/models and GET /v1/models/{model}")


def _unparsable(cause: BaseException | None) -> str | None:
    if isinstance(cause, RecursionError):
        return f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 text (bad byte at offset {cause.start})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return f"a number in the body has more than {sys.get_int_max_str_digits()} digits"
    return None


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str], None], kernel: Kernel) -> None:
        super().__init__(config)
        self._on_ready, self._kernel = on_ready, kernel

    async def shutdown(self, sockets: Any = None) -> None:
        # Event streams never end by themselves, and long polls (for approvals, for an agent run to end) only when
        # they time out, and uvicorn waits for every response before the app's lifespan ends: end them first.
        # Ending the agents' runs answers the polls that wait for them (the lifespan would end them only after).
        try:
            await self._kernel.feed.close()
            await self._kernel.access.approvals.close()
            await self._kernel.agents.close()
        finally:
            await super().shutdown(sockets)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self._on_ready(f"http://{'[' + host + ']' if ':' in host else host}:{port}")


async def serve(
    kernel: Kernel,
    host: str,
    port: int,
    on_ready: Callable[[str], None],
    shutdown: asyncio.Event | None = None,
) -> None:
    """Serve until interrupted or ``shutdown`` is set; ``on_ready(url)`` is called once the socket is bound and
    the kernel started."""
    app = create_app(kernel, host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)

    def ready(url: str) -> None:
        kernel.storage.shares.served_url = url  # share links name this URL when no other is known
        kernel.agents.kernel_url = url  # the agents it runs call it here
        kernel.access.serving_at(url)  # the command line sends the administrator's token here only
        on_ready(url)

    server = _Server(config, ready, kernel)
    app.state.exit = lambda: setattr(server, "should_exit", True)
    if shutdown is None:
        await server.serve()
        return
    watcher = asyncio.create_task(_exit_on(shutdown, server))
    try:
        await server.serve()
    finally:
        watcher.cancel()


async def _exit_on(shutdown: asyncio.Event, server: uvicorn.Server) -> None:
    await shutdown.wait()
    server.should_exit = True
