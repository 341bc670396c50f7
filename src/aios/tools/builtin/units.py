"""``aios/convert_units``: a value converted between units of one kind (length, mass, time, volume, area, speed,
data, temperature). Each unit is its factor to the kind's base unit; temperatures go through kelvin."""

from __future__ import annotations

import math
import sys
from typing import Any

from aios.tools.tool import Tool, ToolContext, ToolError

# kind -> {unit: factor to the kind's base unit}; the first name of each line is the unit's main name.
_FACTORS: dict[str, dict[str, float]] = {
    "length": {"m": 1, "km": 1e3, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "nm": 1e-9, "mi": 1609.344, "yd": 0.9144,
               "ft": 0.3048, "in": 0.0254, "nmi": 1852},
    "mass": {"kg": 1, "g": 1e-3, "mg": 1e-6, "t": 1e3, "lb": 0.45359237, "oz": 0.028349523125, "st": 6.35029318},
    "time": {"s": 1, "ms": 1e-3, "us": 1e-6, "min": 60, "h": 3600, "day": 86400, "week": 604800,
             "year": 31557600},
    "volume": {"l": 1, "ml": 1e-3, "cl": 1e-2, "m3": 1e3, "cm3": 1e-3, "gal": 3.785411784, "qt": 0.946352946,
               "pt": 0.473176473, "cup": 0.2365882365, "floz": 0.0295735295625, "tbsp": 0.01478676478125,
               "tsp": 0.00492892159375},
    "area": {"m2": 1, "km2": 1e6, "cm2": 1e-4, "ha": 1e4, "acre": 4046.8564224, "ft2": 0.09290304,
             "in2": 0.00064516, "mi2": 2589988.110336},
    "speed": {"m/s": 1, "km/h": 1 / 3.6, "mph": 0.44704, "knot": 1852 / 3600, "ft/s": 0.3048},
    "data": {"B": 1, "bit": 0.125, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KiB": 1024, "MiB": 1024 ** 2,
             "GiB": 1024 ** 3, "TiB": 1024 ** 4},
}
_ALIASES = {
    "meter": "m", "meters": "m", "metre": "m", "metres": "m", "kilometer": "km", "kilometers": "km",
    "kilometre": "km", "kilometres": "km", "centimeter": "cm", "centimeters": "cm", "millimeter": "mm",
    "millimeters": "mm", "mile": "mi", "miles": "mi", "yard": "yd", "yards": "yd", "foot": "ft", "feet": "ft",
    "inch": "in", "inches": "in", "kilogram": "kg", "kilograms": "kg", "gram": "g", "grams": "g", "tonne": "t",
    "tonnes": "t", "pound": "lb", "pounds": "lb", "lbs": "lb", "ounce": "oz", "ounces": "oz", "second": "s",
    "seconds": "s", "sec": "s", "minute": "min", "minutes": "min", "hour": "h", "hours": "h", "hr": "h",
    "days": "day", "d": "day", "weeks": "week", "years": "year", "liter": "l", "liters": "l", "litre": "l",
    "litres": "l", "L": "l", "milliliter": "ml", "milliliters": "ml", "mL": "ml", "gallon": "gal",
    "gallons": "gal", "cups": "cup", "kph": "km/h", "kmh": "km/h", "knots": "knot", "kt": "knot", "byte": "B",
    "bytes": "B", "bits": "bit", "celsius": "C", "°C": "C", "fahrenheit": "F", "°F": "F", "kelvin": "K",
}
_TEMPERATURE = {"C": (1.0, 273.15), "F": (5 / 9, 273.15 - 32 * 5 / 9), "K": (1.0, 0.0)}  # K = value*a + b


def _canonical(unit: str) -> str:
    unit = unit.strip()
    return _ALIASES.get(unit, _ALIASES.get(unit.lower(), unit))


def _kind(unit: str) -> str:
    if unit in _TEMPERATURE:
        return "temperature"
    for kind, factors in _FACTORS.items():
        if unit in factors:
            return kind
    raise ToolError(f"unknown unit {unit!r}; known: " + "; ".join(
        f"{kind}: {', '.join(units)}" for kind, units in [*_FACTORS.items(), ("temperature", _TEMPERATURE)]))


def convert(value: float, from_unit: str, to_unit: str) -> float:
    number = _as_float(value)
    source, target = _canonical(from_unit), _canonical(to_unit)
    kind, other = _kind(source), _kind(target)
    if kind != other:
        raise ToolError(f"cannot convert {kind} ({from_unit}) to {other} ({to_unit})")
    if kind == "temperature":
        (a, b), (c, d) = _TEMPERATURE[source], _TEMPERATURE[target]
        kelvin = number * a + b
        if kelvin < 0:
            raise ToolError(f"{value} {from_unit} is below absolute zero")
        return (kelvin - d) / c
    return number * _FACTORS[kind][source] / _FACTORS[kind][target]


def _as_float(value: float) -> float:
    try:
        return float(value)  # a JSON integer may have hundreds of digits, more than a float holds
    except OverflowError:
        raise ToolError(f"the value is too large a number (at most about {sys.float_info.max:.1e})") from None


def _run(params: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    result = convert(params["value"], params["from_unit"], params["to_unit"])
    if not math.isfinite(result):
        raise ToolError(f"{params['value']} {params['from_unit']} in {params['to_unit']} is too large a number")
    return {"value": params["value"], "from_unit": params["from_unit"], "to_unit": params["to_unit"],
            "result": round(result, 12)}


TOOL = Tool(
    name="aios/convert_units",
    description="Convert a value between units of one kind: length (m, km, mi, ft, in), mass (kg, g, lb, oz), "
                "time (s, min, h, day), volume (l, ml, gal, cup), area (m2, ha, acre), speed (km/h, mph, knot), "
                "data (MB, GiB) or temperature (C, F, K).",
    parameters={"type": "object", "properties": {
        "value": {"type": "number"},
        "from_unit": {"type": "string", "minLength": 1},
        "to_unit": {"type": "string", "minLength": 1}},
        "required": ["value", "from_unit", "to_unit"], "additionalProperties": False},
    run=_run, timeout_s=5.0,
)
