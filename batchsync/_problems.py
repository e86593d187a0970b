"""Turn pydantic validation errors into manifest problems a person can act on.

Pydantic's own messages ("Extra inputs are not permitted") name neither the file position nor the
fix. Each error type batchsync's schema can produce gets a message here that states the rule, the
value found and, where one is close, the name the user probably meant.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from pydantic_core import ErrorDetails

from batchsync._schema import (
    SECRET_KEYS,
    AuthModel,
    EndpointsModel,
    LimitsModel,
    ManagedIdentityModel,
    ManifestModel,
    ReferenceModel,
    TargetModel,
    WorkloadIdentityModel,
)
from batchsync._yaml import Document
from batchsync.errors import ManifestProblem

__all__ = ["format_field", "problem_from_error", "suggest"]

Location = tuple[str | int, ...]

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
}
_REFERENCE_HINT = "a reference such as {env: NAME}, {file: PATH} or {value: LITERAL}"


def suggest(word: str, choices: Sequence[str]) -> str:
    """Return ``'; did you mean "X"?'`` for the closest choice, or an empty string."""
    by_case = {choice.lower(): choice for choice in choices}
    if word.lower() in by_case:
        return f'; did you mean "{by_case[word.lower()]}"? Names are case-sensitive'
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.7)
    if close:
        return f'; did you mean "{close[0]}"?'

    return ""


def format_field(location: Location) -> str:
    """Format a location as ``targets[3].credentials.ClientSecret``."""
    text = ""
    for segment in location:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{segment}" if text else segment

    return text


def problem_from_error(path: str, document: Document, error: ErrorDetails) -> ManifestProblem:
    """Translate one pydantic error into a located, actionable problem."""
    location = tuple(error["loc"])
    kind = error["type"]
    if location and location[-1] == "[key]":
        return _secret_key_problem(path, document, location[:-1])
    if kind == "extra_forbidden":
        return _unknown_key_problem(path, document, location)
    if kind == "missing":
        parent, key = location[:-1], str(location[-1])
        line, column = document.position(parent)
        return ManifestProblem(
            path, line, column, format_field(parent), f'required key "{key}" is missing'
        )
    line, column = document.position(location)

    return ManifestProblem(
        path, line, column, format_field(location), _message(kind, location, error)
    )


def _secret_key_problem(path: str, document: Document, location: Location) -> ManifestProblem:
    parent, key = location[:-1], str(location[-1])
    line, column = document.key_position(parent, key)
    message = f'"{key}" is not a synchronizationSecret name{suggest(key, SECRET_KEYS)}'
    if "did you mean" not in message:
        message += "; see the synchronizationSecret enum in the Microsoft Graph reference"

    return ManifestProblem(path, line, column, format_field(location), message)


def _unknown_key_problem(path: str, document: Document, location: Location) -> ManifestProblem:
    parent, key = location[:-1], str(location[-1])
    line, column = document.key_position(parent, key)
    allowed = _allowed_keys(parent)
    hint = suggest(key, allowed) if allowed else ""
    if not hint and allowed:
        hint = f"; allowed keys are {', '.join(allowed)}"

    return ManifestProblem(path, line, column, format_field(location), f'unknown key "{key}"{hint}')


def _message(kind: str, location: Location, error: ErrorDetails) -> str:
    found = error.get("input")
    if _holds_secret(location):
        # The value may be a credential typed in the wrong place: show its type, never its text.
        found = _Opaque(type(found).__name__)
    if kind == "too_short":
        return f"must not be empty; got {_describe(found)}"
    if kind == "model_type" and _is_reference(location):
        return f"must be {_REFERENCE_HINT}; got {_describe(found)}"
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}; got {_describe(found)}"
    if kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", ""))
        return f"must be one of {expected}; got {_describe(found)}{_literal_hint(found, expected)}"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))

    return f"{error['msg'][0].lower()}{error['msg'][1:]}; got {_describe(found)}"


def _literal_hint(found: Any, expected: str) -> str:
    # Pydantic lists the choices as "'global', 'usgov' or 'custom'", quoting only strings.
    if not isinstance(found, str):
        return ""
    quoted = re.findall(r"'([^']*)'", expected)
    if quoted:
        return suggest(found, quoted)
    if found in re.split(r",\s*|\s+or\s+", expected):
        return "; write it without quotes"

    return ""


class _Opaque(str):
    """The type name of a value that must not be shown."""


def _describe(value: Any) -> str:
    if isinstance(value, _Opaque):
        return {"str": "a string", "int": "a number", "float": "a number"}.get(value, f"a {value}")
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f'the string "{shown}"'
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"

    return type(value).__name__


def _is_reference(location: Location) -> bool:
    shape = _shape(location)
    return shape in {("auth", "client_secret"), ("auth", "certificate")} or (
        len(shape) == 4 and shape[:3] == ("targets", "#", "credentials")
    )


def _holds_secret(location: Location) -> bool:
    shape = _shape(location)
    return shape[:2] in {("auth", "client_secret"), ("auth", "certificate")} or (
        len(shape) >= 4 and shape[:3] == ("targets", "#", "credentials")
    )


def _shape(location: Location) -> tuple[str, ...]:
    return tuple("#" if isinstance(segment, int) else segment for segment in location)


def _allowed_keys(location: Location) -> list[str]:
    shape = _shape(location)
    models: dict[tuple[str, ...], type[Any]] = {
        (): ManifestModel,
        ("endpoints",): EndpointsModel,
        ("auth",): AuthModel,
        ("auth", "client_secret"): ReferenceModel,
        ("auth", "certificate"): ReferenceModel,
        ("auth", "workload_identity"): WorkloadIdentityModel,
        ("auth", "managed_identity"): ManagedIdentityModel,
        ("limits",): LimitsModel,
        ("targets", "#"): TargetModel,
    }
    if len(shape) == 4 and shape[:3] == ("targets", "#", "credentials"):
        model: type[Any] | None = ReferenceModel
    else:
        model = models.get(shape)
    if model is None:
        return []
    keys = list(model.model_fields)
    if model is ManifestModel:
        keys.append("targets")

    return keys
