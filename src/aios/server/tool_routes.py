"""The tool side of the HTTP API: a tool ``query_data`` read into calls (422 naming the field when malformed),
``GET /tools`` (every tool with its schema) and ``GET /tools/{author}/{name}``."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aios.jsonvalues import json_problem
from aios.server.wire import query_data_as
from aios.tools.handler import MAX_CALLS

router = APIRouter()


# Keys a call may carry beside its own and that say nothing to the kernel: OpenAI's "type", and what a reply's
# calls hold (result, error, status_code), so an agent can send back the calls a reply gave it.
_PASSING_KEYS = frozenset({"type", "result", "error", "status_code"})


class ToolCallData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256, examples=["aios/calculator"])
    parameters: dict[str, Any] | None = Field(default=None, description="as the tool's JSON Schema says; a string "
                                              "holding a JSON object is read as that object, as AIOS reads it")
    id: str | None = Field(default=None, max_length=128, description="kept on the call's result")

    @model_validator(mode="before")
    @classmethod
    def _without_passing_keys(cls, value: Any) -> Any:
        return {k: v for k, v in value.items() if k not in _PASSING_KEYS} if isinstance(value, dict) else value

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters_from_json_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            parsed = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"is a string that is not a JSON object ({exc.msg} at character {exc.pos})") from None
        problem = json_problem(parsed)  # the body's own check saw only a string
        if problem is not None:
            path, why = problem
            raise ValueError(f"is a string whose JSON{' at ' + '.'.join(map(str, path)) if path else ''} is {why}")
        return parsed


class ToolQueryData(BaseModel):
    """``{query_class: "tool", tool_calls: [{name, parameters}]}``, as the AIOS SDK sends it."""

    model_config = ConfigDict(extra="forbid")

    query_class: Literal["tool"] | None = None
    # At most MAX_CALLS: the tool handler refuses more (in the envelope). A limit here would make pydantic stop
    # at it without reading the calls, and a malformed call must stay a 422 however many there are.
    tool_calls: list[ToolCallData] = Field(min_length=1, description=f"at most {MAX_CALLS}")


def tool_calls_of(query_data: dict[str, Any]) -> list[dict[str, Any]]:
    return [call.model_dump(exclude_none=True) for call in query_data_as(ToolQueryData, query_data, "tool").tool_calls]


@router.get("/tools")
async def list_tools(request: Request) -> dict[str, Any]:
    """Every tool this kernel offers: name, description, parameters schema, limits and where it came from."""
    return {"status": "success", "tools": [tool.describe() for tool in request.app.state.kernel.tools.registry]}


@router.get("/tools/{author}/{name}")
async def get_tool(author: str, name: str, request: Request) -> dict[str, Any]:
    """One tool; 404 naming close matches for a name this kernel does not have."""
    return {"status": "success", "tool": request.app.state.kernel.tools.registry.get(f"{author}/{name}").describe()}
