"""Errors of the Kubernetes API test server, as the v1 `Status` bodies a real apiserver sends.

Messages, reasons and `details` follow `k8s.io/apimachinery/pkg/api/errors` (`NewNotFound`,
`NewConflict`, `NewInvalid`, ...) and `field.Error`, so that client code (and people reading test
failures) see exactly what they would see against a real cluster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.kubeapi_model import ResourceType

Obj = dict[str, Any]


_FIELD_ERROR_TEXT = {
    "Required": ("FieldValueRequired", "Required value"),
    "Invalid": ("FieldValueInvalid", "Invalid value"),
    "Forbidden": ("FieldValueForbidden", "Forbidden"),
    "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
    "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
    "TooLong": ("FieldValueTooLong", "Too long"),
}
_TYPES_WITH_VALUE = ("Invalid", "NotSupported", "Duplicate")


class GoText(str):
    """A value already rendered in Go syntax: shown as is, not quoted, in field errors."""


def go_value(value: Any) -> str:
    """Render a value roughly as Go's `%#v` does in field errors (`"x"`, `-1`, `map[...]...`)."""
    if isinstance(value, GoText):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return f"map[string]string{{{inner}}}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class FieldError:
    """One `field.Error`: where, what kind of problem, the offending value and why."""

    path: str
    type: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        text = _FIELD_ERROR_TEXT[self.type][1]
        if self.type in _TYPES_WITH_VALUE:
            text = f"{text}: {go_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}"

    def cause(self) -> Obj:
        return {
            "reason": _FIELD_ERROR_TEXT[self.type][0],
            "message": self.body(),
            "field": self.path,
        }


class ApiError(Exception):
    """An answer other than success, carrying the exact v1 Status body to send."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Obj | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        if self.message:
            body["message"] = self.message
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def details(name: str = "", group: str = "", kind: str = "", **extra: Any) -> Obj:
    # Go's StatusDetails fields are all omitempty, in this order.
    out: Obj = {}
    for key, value in (("name", name), ("group", group), ("kind", kind), *extra.items()):
        if value:
            out[key] = value
    return out


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rt.qualified} "{name}" not found',
        details(name, rt.group, rt.plural),  # Kind carries the resource: so does the apiserver.
    )


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'namespaces "{namespace}" not found',
        details(namespace, "", "namespaces"),
    )


def route_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{rt.qualified} "{name}" already exists',
        details(name, rt.group, rt.plural),
    )


STALE_MESSAGE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def conflict(rt: ResourceType, name: str, why: str = STALE_MESSAGE) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        details(name, rt.group, rt.plural),
    )


def invalid(group: str, kind: str, name: str, errors: list[FieldError]) -> ApiError:
    qualified_kind = f"{kind}.{group}" if group else kind
    # errors.ToAggregate(): one error as is, several in brackets.
    summary = str(errors[0]) if len(errors) == 1 else f"[{', '.join(str(e) for e in errors)}]"
    return ApiError(
        422,
        "Invalid",
        f'{qualified_kind} "{name}" is invalid: {summary}',
        details(name, group, kind, causes=[e.cause() for e in errors]),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(group: str, resource: str, name: str, why: str) -> ApiError:
    if not resource:
        message = f"forbidden: {why}"
    else:
        qualified = f"{resource}.{group}" if group else resource
        message = (
            f'{qualified} "{name}" is forbidden: {why}'
            if name
            else f"{qualified} is forbidden: {why}"
        )
    return ApiError(403, "Forbidden", message, details(name, group, resource))


def method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def unsupported_media_type(accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def internal_error(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def fault_error(code: int, rt: ResourceType | None, name: str, retry_after: int | None) -> ApiError:
    """The Status a real apiserver (or its priority-and-fairness filter) sends for `code`."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    retry_details = {"retryAfterSeconds": retry_after} if retry_after else {}
    if code == 409 and rt is not None:
        error = conflict(rt, name)
    elif code == 404 and rt is not None:
        error = not_found(rt, name)
    elif code == 429:
        error = ApiError(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            {**retry_details},
        )
    elif code == 500:
        error = internal_error("injected fault")
    elif code == 503:
        error = ApiError(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            {**retry_details},
        )
    elif code == 504:
        error = ApiError(
            504, "Timeout", "Timeout: request did not complete within requested timeout"
        )
    else:
        known = {
            400: "BadRequest",
            401: "Unauthorized",
            403: "Forbidden",
            410: "Expired",
            422: "Invalid",
        }
        error = ApiError(code, known.get(code, ""), f"injected fault: HTTP {code}")
    error.headers.update(headers)
    return error
