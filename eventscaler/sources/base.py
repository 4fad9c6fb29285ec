"""The source interface: what one module per event source provides, and the generic field parser.

A source module defines a `SourceType` subclass, registered in `eventscaler/sources/__init__.py`
under its KEDA trigger type. The class owns, in one place:
- `fields`: its field table (KEDA's metadata names, defaults, required fields, secrets from env);
- `check`: its cross-field validation, with the rule file's field paths in every error;
- `open`: the process's reader of that type (client pools built once, closed on shutdown), whose
  `read` returns one float per trigger or raises `SourceError` with one of the kinds below;
- `from_keda`: what `convert` needs to map a KEDA trigger of that type;
- `simulated_value`: what the simulator's fluid queue reads as that source's value.
Its SDK is imported only by its own module, which the registry imports only when a rule uses it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from eventscaler.fields import Collector, ConfigError, join
from eventscaler.triggers import Measured, Trigger

# SourceError.kind values: the project's own words for what went wrong, whatever the SDK said.
NOT_FOUND = "NotFound"  # the queue, stream, table... does not exist
UNAUTHORIZED = "Unauthorized"  # the server refused the credentials
MISSING_CREDENTIAL = "MissingCredential"  # the environment variable is unset or empty
INVALID_CREDENTIAL = "InvalidCredential"  # the credential is malformed before any request
TIMEOUT = "Timeout"
UNAVAILABLE = "Unavailable"  # the server cannot be reached
BAD_RESPONSE = "BadResponse"  # an answer that carries no usable number
SERVICE_ERROR = "ServiceError"  # any other error the server reported
ERROR_KINDS = (
    NOT_FOUND, UNAUTHORIZED, MISSING_CREDENTIAL, INVALID_CREDENTIAL, TIMEOUT, UNAVAILABLE,
    BAD_RESPONSE, SERVICE_ERROR,
)  # fmt: skip


class SourceError(Exception):
    """A value could not be read. Never a reading of 0: the caller must not scale down on it.

    `kind` is one of the kinds above, `code` the source's own finer word (QueueNotFound...);
    `str()` is one line naming the source object and where the credential comes from, never
    the secret itself.
    """

    def __init__(self, kind: str, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code or kind


class Source(Protocol):
    """A process's reader of one source type; safe to call from many threads at once."""

    def read(self, trigger: Trigger) -> float | Measured: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceOptions:
    """What every source gets when it is opened."""

    timeout_seconds: float = 5.0  # per call; cut further to what the tick has left
    pool_size: int = 16  # connections per server: the daemon's worker threads
    environ: Mapping[str, str] | None = None  # None: the process's environment
    clock: Callable[[], float] = time.time  # wall-clock seconds since the epoch (cron's windows)


_REQUIRED: Any = object()
Parser = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Field:
    """One metadata field of a source, under KEDA's name."""

    key: str  # the rule file's (and KEDA's) name
    parse: Parser  # (value, field path) -> clean value, or raise ConfigError
    default: Any = _REQUIRED  # used as is when the key is absent; _REQUIRED: it must be given
    attr: str = ""  # the settings attribute; default: the key in snake_case
    secret_env: bool = False  # the value names an environment variable holding a secret

    @property
    def attribute(self) -> str:
        return self.attr or _snake_case(self.key)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def required(key: str, parse: Parser, **kwargs: Any) -> Field:
    return Field(key, parse, **kwargs)


def optional(key: str, parse: Parser, default: Any = None, **kwargs: Any) -> Field:
    return Field(key, parse, default, **kwargs)


def _snake_case(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


class SourceType:
    """One source type. Subclasses set the class attributes and override what they need."""

    type: ClassVar[str]
    fields: ClassVar[tuple[Field, ...]]
    settings: ClassVar[Callable[..., Any]]  # a frozen dataclass taking each field's attribute
    # The trigger's generic numbers under this source's KEDA names; None: the source has none
    # (cron: its value is the replica count itself, the target 1).
    target_key: ClassVar[str | None] = None
    target_default: ClassVar[float | None] = None  # None: the target must be given
    activation_key: ClassVar[str | None] = None

    def target_key_for(self, data: Mapping[str, Any]) -> str | None:
        """The key of this trigger's target: `target_key`, unless the source has modes with a
        target each, chosen by the trigger's other fields (redis-streams)."""
        return self.target_key

    def keys(self) -> set[str]:
        """Every key a trigger of this type may have, generic ones aside."""
        generic = {self.target_key, self.activation_key} - {None}
        return {f.key for f in self.fields} | generic  # type: ignore[operator]

    def parse_settings(self, data: Mapping[str, Any], field: str) -> Any:
        """The settings record from a trigger's fields; raises ConfigErrors listing every error."""
        check = Collector()
        values = {f.attribute: check.take(_parse_field, f, data, field) for f in self.fields}
        check.raise_if_any()
        values = check.take(self.check, values, data, field) or values
        check.raise_if_any()
        return self.settings(**values)

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        """Cross-field validation; returns the values, adjusted. Raise ConfigError(s) on error."""
        return values

    def default_name(self, settings: Any) -> str:
        """The trigger's name when the rule gives none (the queue's, the stream's...)."""
        return self.type

    def describe(self, settings: Any) -> str:
        """What it reads, safe to log (never a secret): for `validate` and start-up."""
        return self.type

    def details(self, settings: Any) -> tuple[str, ...]:
        """Settings worth a word in `validate`'s one-line summary (a strategy, a mode)."""
        return ()

    def open(self, options: SourceOptions) -> Source:
        raise NotImplementedError

    def simulated_value(self, settings: Any, backlog: int, in_flight: int) -> float:
        """The value this source would read off the simulator's queue: `backlog` messages in it,
        `in_flight` of them taken by workers. Most count both (a message leaves on completion)."""
        return float(backlog)

    def credential_envs(self, fields: Mapping[str, Any]) -> list[str]:
        """The environment variables a trigger with these rule-file fields reads its secrets
        from (convert finds where the scaled workload gets them)."""
        return [str(fields[f.key]) for f in self.fields if f.secret_env and fields.get(f.key)]

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        """The rule file's fields for a KEDA trigger of this type (None: not convertible, said
        through `keda.lost`). By default every metadata key this source knows, as is, the target
        and activation as numbers; unknown keys are reported and dropped."""
        fields: dict[str, Any] = {}
        known = self.keys()
        numeric = {self.target_key, self.activation_key}
        for key, value in keda.metadata.items():
            if key not in known:
                keda.lost(f"metadata.{key}", f"not a {self.type} setting eventscaler knows")
            elif key in numeric:
                number = keda.number(value)
                if number is None or number < 0:
                    keda.lost(f"metadata.{key}", f"expected a number, got {value!r}: left out, "
                                                 "the default applies")  # fmt: skip
                else:
                    fields[key] = number
            else:
                fields[key] = value
        return fields


class KedaTrigger(Protocol):
    """What convert hands a source to map one KEDA trigger (see eventscaler/convert.py)."""

    v1: bool  # a KEDA v1 ScaledObject (keda.k8s.io): v1's field names and defaults apply
    metadata: Mapping[str, Any]
    auth_ref: Any  # the trigger's authenticationRef, as written
    auth: Mapping[str, Any] | None  # the TriggerAuthentication it names, when in the input

    def lost(self, path: str, message: str) -> None:
        """Report something not converted; `path` is relative to the trigger (metadata.x)."""

    def note(self, path: str, message: str) -> None:
        """Report something converted that the user should know."""

    def number(self, value: Any) -> float | int | None:
        """KEDA's metadata strings ("5") as a number, int when whole; None if not a number."""

    def env_name(self, text: str) -> str:
        """An environment variable name made from an object's name."""


def _parse_field(spec: Field, data: Mapping[str, Any], field: str) -> Any:
    path = join(field, spec.key)
    if data.get(spec.key) is None:
        if spec.required:
            raise ConfigError(path, "is required")
        return spec.default
    return spec.parse(data[spec.key], path)
