"""Tests for resolving credential references and for keeping resolved values out of sight."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import pytest

import batchsync.credentials
from batchsync.credentials import Reference, Secret, file_is_shared, resolve
from batchsync.errors import CredentialError

CANARY = "canary-Credential-41c7e2"
VARIABLE = "BATCHSYNC_TEST_CREDENTIAL"


@pytest.fixture(autouse=True, name="clean_environ")
def fixture_clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test with the test variable unset."""
    monkeypatch.delenv(VARIABLE, raising=False)


def secret_file(folder: Path, content: bytes, name: str = "secret.txt") -> Path:
    """Write ``content`` to ``folder/name``, readable by its owner only, and return the path."""
    path = folder / name
    path.write_bytes(content)
    path.chmod(0o600)

    return path


def resolve_error(reference: Reference) -> CredentialError:
    """Resolve ``reference``, expect it to fail, and return the error."""
    with pytest.raises(CredentialError) as caught:
        resolve(reference)

    return caught.value


class TestResolve:
    """Each kind of reference resolves to its value."""

    def test_env_reference(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An env reference resolves to the variable's value."""
        monkeypatch.setenv(VARIABLE, CANARY)

        assert resolve(Reference("env", VARIABLE)).reveal() == CANARY

    def test_env_keeps_newline(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An env value is used exactly as set, trailing newline included."""
        monkeypatch.setenv(VARIABLE, f"{CANARY}\n")

        assert resolve(Reference("env", VARIABLE)).reveal() == f"{CANARY}\n"

    def test_file_reference(self, tmp_path: Path) -> None:
        """A file reference resolves to the file's text."""
        path = secret_file(tmp_path, CANARY.encode())

        assert resolve(Reference("file", str(path))).reveal() == CANARY

    def test_value_reference(self) -> None:
        """A value reference resolves to the literal itself."""
        assert resolve(Reference("value", CANARY)).reveal() == CANARY

    def test_relative_file_uses_base_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relative file path is read from base_dir, not from the working directory."""
        folder = tmp_path / "manifests"
        folder.mkdir()
        secret_file(folder, CANARY.encode())
        secret_file(tmp_path, b"from-the-working-directory")
        monkeypatch.chdir(tmp_path)

        assert resolve(Reference("file", "secret.txt", base_dir=folder)).reveal() == CANARY

    def test_relative_path_property(self, tmp_path: Path) -> None:
        """The path of a relative file reference is joined to base_dir."""
        reference = Reference("file", "keys/secret.txt", base_dir=tmp_path)

        assert reference.path == tmp_path / "keys" / "secret.txt"

    def test_absolute_path_ignores_base_dir(self, tmp_path: Path) -> None:
        """An absolute file path is used as it is."""
        reference = Reference("file", "/etc/batchsync/secret.txt", base_dir=tmp_path)

        assert reference.path == Path("/etc/batchsync/secret.txt")


class TestFileContent:
    """A file's final line ending is dropped, and every other character is part of the value."""

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            pytest.param(b"abc-secret\n", "abc-secret", id="newline"),
            pytest.param(b"abc-secret\r\n", "abc-secret", id="crlf"),
            pytest.param(b"abc-secret", "abc-secret", id="no-line-ending"),
            pytest.param(b"  abc-secret\t\n", "  abc-secret\t", id="spaces-and-tab-kept"),
            pytest.param(b"abc-secret\n\n", "abc-secret\n", id="only-one-newline-dropped"),
            pytest.param(b"line one\nline two\n", "line one\nline two", id="inner-newline-kept"),
            pytest.param("pässwörd\n".encode(), "pässwörd", id="utf-8"),
        ],
    )
    def test_file_value(self, content: bytes, expected: str, tmp_path: Path) -> None:
        """The value read from a file is its text less one trailing line ending."""
        path = secret_file(tmp_path, content)

        assert resolve(Reference("file", str(path))).reveal() == expected


class TestResolveErrors:
    """A reference that cannot be resolved raises CredentialError naming it."""

    def test_unset_variable(self) -> None:
        """An unset variable is reported with the fix."""
        error = resolve_error(Reference("env", VARIABLE))

        assert str(error) == (
            f'env: {VARIABLE}: environment variable "{VARIABLE}" is not set; '
            "export it or change the reference"
        )

    def test_empty_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A variable set to the empty string is rejected."""
        monkeypatch.setenv(VARIABLE, "")

        error = resolve_error(Reference("env", VARIABLE))

        assert error.reason == f'environment variable "{VARIABLE}" is empty'

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is reported with its absolute path."""
        error = resolve_error(Reference("file", "absent.txt", base_dir=tmp_path))

        assert str(error) == (
            f"file: absent.txt: file {tmp_path / 'absent.txt'} does not exist; "
            "create it or fix the path"
        )

    def test_directory(self, tmp_path: Path) -> None:
        """A directory in place of a file is rejected."""
        error = resolve_error(Reference("file", str(tmp_path)))

        assert error.reason == f"{tmp_path} is a directory"

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty file is rejected."""
        path = secret_file(tmp_path, b"")

        error = resolve_error(Reference("file", str(path)))

        assert error.reason == f"file {path} is empty"

    def test_newline_only_file(self, tmp_path: Path) -> None:
        """A file holding only a newline is as empty as an empty one."""
        path = secret_file(tmp_path, b"\n")

        error = resolve_error(Reference("file", str(path)))

        assert error.reason == f"file {path} is empty"

    def test_file_too_large(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file larger than MAX_FILE_BYTES is rejected as a wrong path."""
        monkeypatch.setattr(batchsync.credentials, "MAX_FILE_BYTES", 16)
        path = secret_file(tmp_path, CANARY.encode() * 2)

        error = resolve_error(Reference("file", str(path)))

        assert (
            error.reason
            == f"file {path} is {len(CANARY) * 2} bytes, more than the 16 a secret may be"
        )

    def test_file_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 is rejected with the offset of the first bad byte."""
        path = secret_file(tmp_path, b"abc\xff")

        error = resolve_error(Reference("file", str(path)))

        assert error.reason == f"file {path} is not UTF-8 (invalid byte at offset 3)"

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A file this user may not read is reported as not readable."""
        path = secret_file(tmp_path, CANARY.encode())
        path.chmod(0)
        if os.access(path, os.R_OK):
            pytest.skip("this user reads files whatever their mode (root)")

        error = resolve_error(Reference("file", str(path)))

        assert error.reason == f"file {path} is not readable"

    def test_error_is_lookup_error(self) -> None:
        """CredentialError can be caught as the LookupError it is."""
        with pytest.raises(LookupError):
            resolve(Reference("env", VARIABLE))

    def test_error_fields(self) -> None:
        """The error carries the reference, the reason and the fix separately."""
        error = resolve_error(Reference("env", VARIABLE))

        assert error.reference == f"env: {VARIABLE}"
        assert error.reason == f'environment variable "{VARIABLE}" is not set'
        assert error.fix == "export it or change the reference"


class TestErrorsHideValues:
    """No CredentialError carries the value it failed to read."""

    def test_too_large_file_hidden(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The content of a file too large to be a secret is not in the message."""
        monkeypatch.setattr(batchsync.credentials, "MAX_FILE_BYTES", 16)
        path = secret_file(tmp_path, CANARY.encode() * 2)

        error = resolve_error(Reference("file", str(path)))

        assert CANARY not in str(error)
        assert CANARY not in repr(error.args)

    def test_non_utf8_file_hidden(self, tmp_path: Path) -> None:
        """The readable part of a file that is not UTF-8 is not in the message."""
        path = secret_file(tmp_path, CANARY.encode() + b"\xff")

        error = resolve_error(Reference("file", str(path)))

        assert CANARY not in str(error)
        assert CANARY not in repr(error.args)

    def test_value_reference_named_not_shown(self) -> None:
        """A value reference is named by its kind only, so errors that name it hide the literal."""
        assert str(Reference("value", CANARY)) == "value: <literal>"

    def test_env_reference_named(self) -> None:
        """An env reference is named by its variable."""
        assert str(Reference("env", VARIABLE)) == f"env: {VARIABLE}"

    def test_file_reference_named(self) -> None:
        """A file reference is named by the path as written."""
        assert str(Reference("file", "keys/secret.txt")) == "file: keys/secret.txt"


class TestSecret:
    """Secret shows its value only through reveal()."""

    def test_reveal(self) -> None:
        """reveal() returns the value."""
        assert Secret(CANARY).reveal() == CANARY

    def test_repr_hidden(self) -> None:
        """repr() shows a placeholder."""
        assert repr(Secret(CANARY)) == "Secret('***')"

    def test_str_hidden(self) -> None:
        """str() shows the same placeholder."""
        assert str(Secret(CANARY)) == "Secret('***')"

    def test_f_string_hidden(self) -> None:
        """An f-string shows the placeholder, with or without a conversion."""
        secret = Secret(CANARY)

        assert f"{secret}" == "Secret('***')"
        assert f"{secret!s}" == "Secret('***')"
        assert f"{secret!r}" == "Secret('***')"

    @pytest.mark.parametrize("spec", ["", "s", ">40", "^10"], ids=["empty", "s", "align", "width"])
    def test_format_hidden(self, spec: str) -> None:
        """format() ignores the spec and shows the placeholder."""
        assert format(Secret(CANARY), spec) == "Secret('***')"

    def test_percent_format_hidden(self) -> None:
        """%-formatting shows the placeholder."""
        assert "%s %r" % (Secret(CANARY), Secret(CANARY)) == "Secret('***') Secret('***')"  # noqa: UP031

    def test_str_format_hidden(self) -> None:
        """str.format shows the placeholder."""
        assert "{}".format(Secret(CANARY)) == "Secret('***')"  # noqa: UP032

    def test_container_repr_hidden(self) -> None:
        """A Secret inside a container stays hidden in the container's repr."""
        assert CANARY not in repr({"ClientSecret": [Secret(CANARY)]})

    def test_pickle_rejected(self) -> None:
        """A Secret cannot be pickled, so it cannot reach a file or another process that way."""
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(Secret(CANARY))

    def test_copy_rejected(self) -> None:
        """copy.copy goes through the same pickling hook and is rejected too."""
        with pytest.raises(TypeError, match="cannot be pickled"):
            copy.copy(Secret(CANARY))

    def test_equal_by_value(self) -> None:
        """Two Secrets with the same value are equal and hash alike."""
        assert Secret(CANARY) == Secret(CANARY)
        assert hash(Secret(CANARY)) == hash(Secret(CANARY))

    def test_not_equal_to_str(self) -> None:
        """A Secret never equals the plain string of its value."""
        assert Secret(CANARY) != CANARY

    def test_no_instance_dict(self) -> None:
        """The value lives in a slot, so vars() cannot dump it."""
        with pytest.raises(TypeError):
            vars(Secret(CANARY))


class TestFileIsShared:
    """file_is_shared returns whether users other than the owner may read a file."""

    @pytest.mark.parametrize(
        ("mode", "shared"),
        [
            pytest.param(0o600, False, id="owner-only"),
            pytest.param(0o400, False, id="owner-read-only"),
            pytest.param(0o640, True, id="group-readable"),
            pytest.param(0o604, True, id="world-readable"),
        ],
    )
    def test_mode(self, mode: int, shared: bool, tmp_path: Path) -> None:
        """Read permission for group or others makes the file shared."""
        path = secret_file(tmp_path, CANARY.encode())
        path.chmod(mode)

        assert file_is_shared(Reference("file", str(path))) is shared

    def test_missing_file_not_shared(self, tmp_path: Path) -> None:
        """A missing file is not shared, because resolving it reports it as missing."""
        assert file_is_shared(Reference("file", "absent.txt", base_dir=tmp_path)) is False
