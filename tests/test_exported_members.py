"""Tests that the package's public surface is exactly what ``batchsync.__all__`` declares."""

from __future__ import annotations

import types

import batchsync

# Dunder names that are part of the public surface even though they start with an underscore.
PUBLIC_DUNDERS = {"__version__"}


def public_names() -> list[str]:
    """Return the names a user can import from the package, submodules left out."""
    return [
        name
        for name, value in vars(batchsync).items()
        if not isinstance(value, types.ModuleType)
        and (not name.startswith("_") or name in PUBLIC_DUNDERS)
    ]


class TestExportedMembers:
    """batchsync.__all__ is sorted and lists the whole public namespace."""

    def test_all_sorted(self) -> None:
        """__all__ is in sorted order, so additions are easy to review."""
        assert batchsync.__all__ == sorted(batchsync.__all__)

    def test_all_without_duplicates(self) -> None:
        """Each name appears in __all__ once."""
        assert len(batchsync.__all__) == len(set(batchsync.__all__))

    def test_all_matches_namespace(self) -> None:
        """Every public name is in __all__ and every name in __all__ exists."""
        assert sorted(public_names()) == sorted(batchsync.__all__)

    def test_no_submodule_exported(self) -> None:
        """No name in __all__ is a module."""
        modules = [
            name
            for name in batchsync.__all__
            if isinstance(getattr(batchsync, name), types.ModuleType)
        ]

        assert modules == []

    def test_version_is_string(self) -> None:
        """__version__ is a version string."""
        assert isinstance(batchsync.__version__, str)
