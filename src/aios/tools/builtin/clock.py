"""``aios/current_time`` and ``aios/convert_time``: the time now in any IANA time zone, and a time converted
from one zone to another (daylight saving included), from the system's time-zone database."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aios.tools.tool import Tool, ToolContext, ToolError


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Paris' or 'UTC'") from None


def _described(moment: datetime) -> dict[str, Any]:
    return {"iso": moment.isoformat(), "timezone": str(moment.tzinfo), "utc_offset": moment.strftime("%z"),
            "weekday": moment.strftime("%A"), "unix": moment.timestamp()}


def _now(params: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    return _described(datetime.now(zone(params.get("timezone", "UTC"))))


def _convert(params: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    try:
        moment = datetime.fromisoformat(params["time"])
    except ValueError:
        raise ToolError(f"time {params['time']!r} is not ISO 8601, e.g. '2026-03-29T14:30' or "
                        "'2026-03-29T14:30:00+02:00'") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(params.get("from_timezone", "UTC")))
    elif "from_timezone" in params:
        raise ToolError("the time carries its own UTC offset; give from_timezone only for a time without one")
    target = zone(params["to_timezone"])
    try:
        return _described(moment.astimezone(target))
    except (OverflowError, ValueError):  # past year 9999 or before year 1 once in the other zone
        raise ToolError(f"time {params['time']!r} in {target.key} falls outside the years 1 to 9999") from None


_ZONE = {"type": "string", "minLength": 1, "description": "an IANA time zone, e.g. 'Asia/Tokyo'"}

TOOLS = [
    Tool(name="aios/current_time", description="The current date and time in a time zone (default UTC).",
         parameters={"type": "object", "properties": {"timezone": _ZONE}, "additionalProperties": False},
         run=_now, timeout_s=5.0),
    Tool(name="aios/convert_time",
         description="Convert a date and time from one time zone to another, e.g. 2026-03-29T14:30 from "
                     "Europe/Paris to America/New_York.",
         parameters={"type": "object", "properties": {
             "time": {"type": "string", "minLength": 1, "description": "ISO 8601 date and time"},
             "from_timezone": _ZONE, "to_timezone": _ZONE},
             "required": ["time", "to_timezone"], "additionalProperties": False},
         run=_convert, timeout_s=5.0),
]
