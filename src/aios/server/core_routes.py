"""The kernel's own routes, as AIOS has them: its models (list, check, add and remove while serving), the models
selected for every agent, API keys, reloading the config file, shutting down, and the MCP servers.

Changing the kernel (adding or removing a model, keys, refresh, cleanup) needs the administrator's token
(``<data_dir>/access/admin.token``); reading does not. Replies keep the AIOS shapes (``status``, ``message``)
with what this kernel knows beside them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from aios.config import ModelConfig
from aios.errors import NotAvailable
from aios.kernel import Kernel
from aios.llm.handler import check_llms_entry
from aios.server.access_routes import administrator
from aios.server.wire import LLMChoice

router = APIRouter()


def _kernel(request: Request) -> Kernel:
    return request.app.state.kernel


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelName(_Body):
    name: str = Field(min_length=1, max_length=1000)


class KeyUpdate(_Body):
    """AIOS's ``/core/config/update`` body: a provider's API key (``name``, the model, is accepted and unused)."""

    provider: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    api_key: str = Field(min_length=1, max_length=10_000, repr=False)
    name: str | None = None


# -- models ---------------------------------------------------------------------------------------------------
@router.get("/core/llms/list")
async def llms_list(request: Request) -> dict[str, Any]:
    return {"status": "success", "llms": [model.listing() for model in _kernel(request).config.llms.models]}


@router.get("/core/llms/check")
async def llms_check(request: Request) -> dict[str, Any]:
    """Which models are served now, and in what state (``up``, ``down``), with their syscalls in flight."""
    kernel = _kernel(request)
    return {"status": "success", "llms": [
        {"name": core.name, "backend": core.backend, "state": "down" if getattr(core, "down", None) else "up",
         "in_flight": kernel.router.in_flight(core)} for core in kernel.router.cores]}


@router.post("/core/llms/add")
async def llms_add(body: ModelConfig, request: Request) -> dict[str, Any]:
    """Load a model (an ``llms.models`` entry) and route to it; other models serve meanwhile."""
    administrator(request)
    listing = await _kernel(request).add_model(body)
    return {"status": "success", "message": f"model {body.name} added", "llm": listing}


@router.post("/core/llms/remove")
async def llms_remove(body: ModelName, request: Request) -> dict[str, Any]:
    """Stop routing to a model, let its syscalls in flight finish, then unload it; replies once it is gone."""
    administrator(request)
    removed = await _kernel(request).remove_model(body.name)
    return {"status": "success", "message": f"model {body.name} removed", **removed}


# -- the models selected for every agent ----------------------------------------------------------------------
@router.post("/user/select/llms")
async def select_llms(body: list[LLMChoice], request: Request) -> dict[str, Any]:
    """Route every LLM syscall among these models; [] lifts the selection. A sampling value (temperature, top_p,
    max_new_tokens) that would get every request using the entry refused is refused here instead."""
    kernel = _kernel(request)
    if request.app.state.auth_required:
        administrator(request)  # it changes every agent's routing
    chosen = [choice.model_dump(exclude_none=True) for choice in body]
    for entry in chosen:
        check_llms_entry(entry)
    kernel.router.select(chosen)
    if not chosen:
        return {"status": "warning", "message": "No LLM selected"}
    return {"status": "success", "message": f"LLMs {chosen} selected"}


@router.get("/user/selected/llms")
async def selected_llms(request: Request) -> dict[str, Any]:
    chosen = _kernel(request).router.selected
    if not chosen:
        return {"status": "warning", "message": "No LLM selected", "llms": []}
    return {"status": "success", "message": f"LLM {chosen} selected", "llms": chosen}


# -- configuration --------------------------------------------------------------------------------------------
@router.post("/core/config/update")
async def update_config(body: KeyUpdate, request: Request) -> dict[str, Any]:
    """Set ``api_keys.<provider>`` and restart the models that use it (each drains first); kept until the kernel
    stops (the config file is not written)."""
    administrator(request)
    restarted = await _kernel(request).set_api_key(body.provider, body.api_key)
    return {"status": "success", "message": "Configuration updated and services restarted", "restarted": restarted}


@router.post("/core/refresh")
async def refresh(request: Request) -> dict[str, Any]:
    """Read the config file again and apply its ``llms.models``: new models are added, missing ones removed,
    changed ones restarted. Other sections take effect at the next start (``needs_restart`` names them)."""
    administrator(request)
    changes = await _kernel(request).refresh()
    return {"status": "success", "message": "Configuration refreshed and components reinitialized", **changes}


@router.post("/core/cleanup")
async def cleanup(request: Request) -> dict[str, Any]:
    """Stop the kernel: the server finishes its requests in flight, then every component is closed."""
    administrator(request)
    exit_server = getattr(request.app.state, "exit", None)
    if exit_server is None:
        raise NotAvailable("this app is not run by `aios serve`: stop it where it was started")
    exit_server()
    return {"status": "success", "message": "All components cleaned up"}


# -- tools ----------------------------------------------------------------------------------------------------
@router.get("/get/mcp/server")
async def mcp_server(request: Request) -> dict[str, Any]:
    """The kernel's MCP servers (``tools.mcp_servers``); ``path`` is the first one's command line, as AIOS gives
    its one server's script path."""
    servers = _kernel(request).tools.mcp_servers
    if not servers:
        return {"status": "warning", "message": "MCP server not found"}
    first = servers[0].config
    return {"status": "success", "path": " ".join([first.command, *first.args]),
            "servers": [server.describe() for server in servers]}
