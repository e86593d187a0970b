"""Resolve credential references (``{env: NAME}``, ``{file: PATH}``, ``{value: LITERAL}``).

A manifest never holds a credential itself, only a reference to where it lives. Resolution happens
at the last moment, per target, and the result is wrapped in :class:`Secret`, whose ``repr`` and
``str`` hide the value, so that a value that ends up in a log call, an exception or a traceback
prints as ``Secret('***')``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from batchsync.errors import CredentialError

__all__ = ["Reference", "ReferenceKind", "Secret", "resolve"]

ReferenceKind = Literal["env", "file", "value"]

# A credential file larger than this is a wrong path (a log, a binary), not a secret.
MAX_FILE_BYTES = 1024 * 1024


class Secret:
    """A credential value that hides itself from ``repr``, ``str`` and formatting."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the value; call only where it leaves the process (request body, MSAL)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value

        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        msg = "a Secret cannot be pickled"
        raise TypeError(msg)


@dataclass(frozen=True, slots=True)
class Reference:
    """The location of a credential. ``base_dir`` anchors a relative ``file`` path (the manifest's folder)."""

    kind: ReferenceKind
    target: str
    base_dir: Path | None = None

    def __str__(self) -> str:
        if self.kind == "value":
            return "value: <literal>"

        return f"{self.kind}: {self.target}"

    @property
    def path(self) -> Path:
        """Return the absolute file path of a ``file`` reference."""
        path = Path(self.target).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path

        return path


def resolve(reference: Reference) -> Secret:
    """Resolve ``reference`` to its value.

    Raises:
        CredentialError: the variable is unset, empty or not valid UTF-8, or the file is
            missing, unreadable, not a regular file, empty, too large or not UTF-8.
    """
    if reference.kind == "env":
        value = _read_env(reference)
    elif reference.kind == "file":
        value = _read_file(reference)
    else:
        value = reference.target

    return Secret(value)


def file_is_shared(reference: Reference) -> bool:
    """Return whether a ``file`` reference can be read by users other than its owner."""
    try:
        mode = reference.path.stat().st_mode
    except OSError:
        return False

    return bool(mode & (stat.S_IRGRP | stat.S_IROTH))


def _read_env(reference: Reference) -> str:
    value = os.environ.get(reference.target)
    if value is None:
        raise CredentialError(
            str(reference),
            f'environment variable "{reference.target}" is not set',
            fix="export it or change the reference",
        )
    if not value:
        raise CredentialError(
            str(reference),
            f'environment variable "{reference.target}" is empty',
            fix="set it to the credential or change the reference",
        )
    # Python decodes bytes that are not UTF-8 to lone surrogates, which the JSON request body
    # cannot carry.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CredentialError(
            str(reference),
            f'environment variable "{reference.target}" is not valid UTF-8',
            fix="set it to UTF-8 text",
        ) from None

    return value


def _read_file(reference: Reference) -> str:
    path = reference.path
    try:
        _check_file_type(reference, path.stat())
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise CredentialError(
            str(reference), f"file {path} does not exist", fix="create it or fix the path"
        ) from None
    except IsADirectoryError:
        raise CredentialError(
            str(reference), f"{path} is a directory", fix="name the file inside it"
        ) from None
    except PermissionError:
        raise CredentialError(
            str(reference), f"file {path} is not readable", fix="grant read access to this user"
        ) from None
    except OSError as exc:
        raise CredentialError(str(reference), f"cannot read file {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        reason = f"file {path} is more than the {MAX_FILE_BYTES} bytes a secret may be"
        raise CredentialError(str(reference), reason, fix="check the path")

    return _decode_file(reference, data)


def _check_file_type(reference: Reference, status: os.stat_result) -> None:
    """Reject what is not a regular file: reading a FIFO blocks and /dev/zero never ends."""
    path = reference.path
    if stat.S_ISDIR(status.st_mode):
        raise CredentialError(
            str(reference), f"{path} is a directory", fix="name the file inside it"
        )
    if not stat.S_ISREG(status.st_mode):
        raise CredentialError(
            str(reference),
            f"{path} is not a regular file (a FIFO, socket or device)",
            fix="point the reference at a regular file",
        )
    if status.st_size > MAX_FILE_BYTES:
        reason = (
            f"file {path} is {status.st_size} bytes, more than the {MAX_FILE_BYTES} a secret may be"
        )
        raise CredentialError(str(reference), reason, fix="check the path")


def _decode_file(reference: Reference, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"file {reference.path} is not UTF-8 (invalid byte at offset {exc.start})"
        raise CredentialError(str(reference), reason, fix="save it as UTF-8") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise CredentialError(
            str(reference), f"file {reference.path} is empty", fix="write the credential into it"
        )

    return text
