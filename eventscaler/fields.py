"""Field parsing shared by the rule file and every source's field table.

Each parser returns the clean value or raises ConfigError(field, message), `field` being the
dotted path of the value inside its rule (`triggers[0].queueName`). The rule loader adds the file
and the rule; a `Collector` keeps every error of one rule so one `validate` run lists them all.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any

# Replica counts and HPA policy values are int32 in Kubernetes; KEDA's pollingInterval is int32
# seconds. Larger values are errors, not requests the API server or the scheduler would refuse.
MAX_INT32 = 2**31 - 1

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


class ConfigError(Exception):
    """A field's value is wrong; `field` is its dotted path within the rule or section."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ConfigErrors(Exception):
    """Several fields of one rule are wrong: all are reported at once, not one per edit."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


class Collector:
    """Runs field parsers, keeping every error instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def take(self, parse: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except ConfigError as exc:
            self.errors.append(exc)
        except ConfigErrors as exc:
            self.errors.extend(exc.errors)
        return None

    def add(self, field: str, message: str) -> None:
        self.errors.append(ConfigError(field, message))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigErrors(self.errors)


class _BoundedRepr(reprlib.Repr):
    """repr() that stays short: a YAML alias bomb (lists of aliases of lists...) shares its parts
    when loaded, but would expand into gigabytes if printed in full."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict = 3, 6, 6
        self.maxstring = self.maxlong = self.maxother = 200

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:
            # Past Python's 4,300-digit str() limit (YAML's hex notation can write such a number).
            return f"an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits"


_SHOWN = _BoundedRepr()


def show(value: Any) -> str:
    """A value from the file as an error message quotes it: short, whatever its size."""
    text = _SHOWN.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_duration(value: Any, field: str, allow_zero: bool = True) -> float:
    """Seconds from a number or a string like "30", "30s", "5m", "1h30m", "500ms"."""
    expected = "expected a duration (seconds, or a string like '30s', '5m', '1h30m')"
    seconds: float | None = None
    # `abs(value) <= max` rejects NaN and infinities, and a YAML integer too large for a float.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) if abs(value) <= sys.float_info.max else None
    elif isinstance(value, str):
        seconds = _duration_from_text(value.strip())
    if seconds is None or not math.isfinite(seconds):
        raise ConfigError(field, f"{expected}, got {show(value)}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigError(field, f"expected a duration of {bound} seconds, got {show(value)}")
    return seconds


def _duration_from_text(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            unit_seconds = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            return sum(float(n) * unit_seconds[u] for n, u in parts)
    return None


def parse_int(value: Any, field: str, minimum: int) -> int:
    is_whole_number = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not is_whole_number or value < minimum:
        raise ConfigError(field, f"expected a whole number >= {minimum}, got {show(value)}")
    if value > MAX_INT32:
        expected = f"expected a whole number from {minimum} to {MAX_INT32}"
        raise ConfigError(field, f"{expected}, got {show(value)}")
    return int(value)


def parse_number(value: Any, field: str, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    # Not math.isfinite: it raises OverflowError on a YAML integer too large for a float.
    ok = ok and abs(value) <= sys.float_info.max and (value > 0 if positive else value >= 0)
    if not ok:
        kind = "a positive number" if positive else "a number >= 0"
        raise ConfigError(field, f"expected {kind}, got {show(value)}")
    return float(value)


def parse_str(value: Any, field: str, pattern: re.Pattern[str], what: str) -> str:
    # fullmatch, not match: `$` also matches before a trailing newline ("name: |" in YAML).
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(field, f"expected {what}, got {show(value)}")
    return value


def parse_text(value: Any, field: str, what: str = "a non-empty string") -> str:
    """Any non-empty single string (a query, a URL path...)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, f"expected {what}, got {show(value)}")
    return value


def parse_bool(value: Any, field: str) -> bool:
    """true/false, also written as KEDA's metadata strings "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(field, f"expected true or false, got {show(value)}")


def parse_env_name(value: Any, field: str) -> str:
    return parse_str(value, field, ENV_NAME, "the name of an environment variable")


def parse_choice(value: Any, field: str, choices: Mapping[str, str]) -> str:
    """A case-insensitive choice; returns the canonical spelling."""
    if isinstance(value, str) and value.lower() in choices:
        return choices[value.lower()]
    shown = " or ".join(repr(c) for c in dict.fromkeys(choices.values()))
    raise ConfigError(field, f"expected {shown}, got {show(value)}")


def choices(*names: str) -> dict[str, str]:
    """A case-insensitive choice table for parse_choice: lower-cased name -> canonical name."""
    return {name.lower(): name for name in names}


def check_mapping(value: Any, field: str, known: Collection[str]) -> Mapping[str, Any]:
    """Check `value` is a mapping whose keys are all known; typos get a suggestion."""
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"expected a mapping, got {show(value)}")
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            prefix = f"{field}." if field else ""
            allowed = ", ".join(sorted(known))
            raise ConfigError(f"{prefix}{key}", f"unknown field{hint}; known fields: {allowed}")
    return value


def required(data: Mapping[str, Any], key: str, field: str) -> Any:
    if data.get(key) is None:
        raise ConfigError(field, "is required")
    return data[key]


def join(prefix: str, key: str) -> str:
    """`triggers[0]` + `queueName` -> `triggers[0].queueName`."""
    return f"{prefix}.{key}" if prefix else key
