"""Tests for the strict YAML loader: typed scalars, node positions and rejected constructs."""

from __future__ import annotations

from typing import Any

import pytest

from batchsync._yaml import MAX_DEPTH, Document, YamlProblem, parse

TEXT = """\
version: 1
auth:
  client_id: abc
targets:
  - name: first
    credentials:
      UserName: {value: admin}
  - name: second
"""


def problem_of(text: str) -> YamlProblem:
    """Parse ``text``, expect it to be rejected, and return the problem."""
    with pytest.raises(ValueError, match=r".") as caught:
        parse(text)
    problem = caught.value.args[0]
    assert isinstance(problem, YamlProblem)

    return problem


@pytest.fixture(name="document")
def fixture_document() -> Document:
    """The parsed TEXT."""
    return parse(TEXT)


class TestScalarTypes:
    """Plain scalars get their YAML 1.1 type, and quoted ones stay strings."""

    @pytest.mark.parametrize(
        ("written", "expected"),
        [
            pytest.param("8", 8, id="int"),
            pytest.param("-3", -3, id="negative-int"),
            pytest.param("2.5", 2.5, id="float"),
            pytest.param("true", True, id="true"),
            pytest.param("false", False, id="false"),
            pytest.param("yes", True, id="yes-is-true"),
            pytest.param("null", None, id="null"),
            pytest.param("~", None, id="tilde"),
            pytest.param("", None, id="empty"),
            pytest.param("contoso", "contoso", id="plain-string"),
            pytest.param('"8"', "8", id="quoted-int"),
            pytest.param("'true'", "true", id="quoted-bool"),
            pytest.param('"null"', "null", id="quoted-null"),
            pytest.param("!!str 8", "8", id="str-tag"),
        ],
    )
    def test_scalar_value(self, written: str, expected: Any) -> None:
        """A scalar converts to the value YAML defines for it."""
        assert parse(f"key: {written}\n").data == {"key": expected}

    @pytest.mark.parametrize(
        ("written", "expected_type"),
        [
            pytest.param("8", int, id="int"),
            pytest.param("true", bool, id="bool"),
            pytest.param("2.5", float, id="float"),
            pytest.param('"8"', str, id="quoted"),
        ],
    )
    def test_scalar_type(self, written: str, expected_type: type) -> None:
        """A scalar converts to exactly its type (true is a bool, not the int 1)."""
        assert type(parse(f"key: {written}\n").data["key"]) is expected_type

    @pytest.mark.parametrize("written", ["8", "true", "null", "2.5"])
    def test_keys_stay_strings(self, written: str) -> None:
        """Mapping keys stay the text written, so a key 8 or true is the string."""
        assert list(parse(f"{written}: x\n").data) == [written]

    def test_nested_structure(self, document: Document) -> None:
        """Mappings and sequences become dicts and lists."""
        assert document.data == {
            "version": 1,
            "auth": {"client_id": "abc"},
            "targets": [
                {"name": "first", "credentials": {"UserName": {"value": "admin"}}},
                {"name": "second"},
            ],
        }


class TestPositions:
    """Positions are 1-based lines and columns of nodes in the text."""

    def test_top_level_value(self, document: Document) -> None:
        """A top-level value is located where the value starts."""
        assert document.position(("version",)) == (1, 10)

    def test_nested_value(self, document: Document) -> None:
        """A nested value is located through mappings."""
        assert document.position(("auth", "client_id")) == (3, 14)

    def test_sequence_item(self, document: Document) -> None:
        """A sequence item is located by its index."""
        assert document.position(("targets", 1)) == (8, 5)

    def test_value_inside_sequence(self, document: Document) -> None:
        """A value in a mapping inside a sequence is located through both."""
        assert document.position(("targets", 0, "credentials", "UserName", "value")) == (7, 25)

    def test_root(self, document: Document) -> None:
        """The empty path is the document's start."""
        assert document.position(()) == (1, 1)

    def test_missing_key_uses_parent(self, document: Document) -> None:
        """A path that leaves the tree is located at the deepest node that exists."""
        assert document.position(("targets", 0, "absent", "deeper")) == (5, 5)

    def test_index_past_end_uses_parent(self, document: Document) -> None:
        """An index past the end of a sequence is located at the sequence."""
        assert document.position(("targets", 9)) == (5, 3)

    def test_key_position(self, document: Document) -> None:
        """key_position locates the key itself, not its value."""
        assert document.key_position(("auth",), "client_id") == (3, 3)

    def test_key_position_in_sequence(self, document: Document) -> None:
        """key_position finds a key in a mapping inside a sequence."""
        assert document.key_position(("targets", 0, "credentials"), "UserName") == (7, 7)

    def test_key_position_unknown_key(self, document: Document) -> None:
        """An unknown key is located at the mapping that should hold it."""
        assert document.key_position(("auth",), "absent") == (3, 3)


class TestRejected:
    """Constructs a manifest never needs are rejected with their position."""

    def test_duplicate_key(self) -> None:
        """A repeated key is rejected at its second occurrence."""
        problem = problem_of("a: 1\nb: 2\na: 3\n")

        assert problem == YamlProblem(3, 1, 'duplicate key "a"; remove one of them')

    def test_alias(self) -> None:
        """An alias is rejected rather than expanded."""
        problem = problem_of("a: &shared [1, 2]\nb: *shared\n")

        assert "anchors and aliases" in problem.message

    def test_merge_key(self) -> None:
        """The << merge key is rejected."""
        problem = problem_of("a: {x: 1}\n<<: {y: 2}\n")

        assert problem == YamlProblem(2, 1, "mapping keys must be plain strings")

    def test_complex_key(self) -> None:
        """A sequence used as a mapping key is rejected."""
        problem = problem_of("? [a, b]\n: 1\n")

        assert problem.message == "mapping keys must be plain strings"

    def test_tab_indentation(self) -> None:
        """A tab used for indentation gets a message naming the tab."""
        problem = problem_of("a:\n\tb: 1\n")

        assert problem == YamlProblem(
            2, 1, "a tab is used for indentation; YAML allows only spaces"
        )

    def test_syntax_error(self) -> None:
        """Malformed YAML is reported as invalid YAML with the parser's reason."""
        problem = problem_of("a: [1, 2\nb: 3\n")

        assert problem.message.startswith("invalid YAML: ")

    def test_two_documents(self) -> None:
        """A second document in the stream is rejected."""
        problem = problem_of("a: 1\n---\nb: 2\n")

        assert problem.line == 2

    def test_comment_only(self) -> None:
        """A file of comments only has no document."""
        problem = problem_of("# nothing here\n")

        assert problem == YamlProblem(1, 1, "the file contains no YAML document")

    def test_python_scalar_tag(self) -> None:
        """A Python object tag on a scalar is rejected, not constructed."""
        problem = problem_of("a: !!python/name:os.system x\n")

        assert problem.message.startswith("invalid value: could not determine a constructor")

    @pytest.mark.parametrize(
        ("written", "message"),
        [
            pytest.param(
                "!!python/object/apply:os.system [echo]",
                "unsupported YAML tag !!python/object/apply:os.system on a list",
                id="python-tag-on-list",
            ),
            pytest.param("!!set {x: null}", "unsupported YAML tag !!set on a mapping", id="set"),
            pytest.param("!!str [1]", "unsupported YAML tag !!str on a list", id="str-on-list"),
            pytest.param("!custom {b: 1}", "unsupported YAML tag !custom on a mapping", id="local"),
        ],
    )
    def test_collection_tag(self, written: str, message: str) -> None:
        """A tag on a list or mapping is rejected instead of silently ignored."""
        assert problem_of(f"a: {written}\n") == YamlProblem(1, 4, message)

    def test_default_collection_tags_accepted(self) -> None:
        """The tags a list and a mapping have anyway (!!seq, !!map) are accepted."""
        assert parse("a: !!seq [1]\nb: !!map {c: 2}\n").data == {"a": [1], "b": {"c": 2}}

    @pytest.mark.parametrize(
        ("written", "tag"),
        [
            pytest.param("2024-13-45", "!!timestamp", id="impossible-date"),
            pytest.param("!!int abc", "!!int", id="int-tag-on-text"),
            pytest.param("!!bool maybe", "!!bool", id="bool-tag-on-text"),
            pytest.param("!!timestamp soon", "!!timestamp", id="timestamp-tag-on-text"),
        ],
    )
    def test_invalid_typed_scalar(self, written: str, tag: str) -> None:
        """A scalar its type cannot construct is a located problem, not a crash."""
        problem = problem_of(f"a: {written}\n")

        assert problem == YamlProblem(
            1, 4, f"invalid {tag} value; quote it if it is meant as a string"
        )

    def test_nesting_at_limit_accepted(self) -> None:
        """Nesting down to MAX_DEPTH levels is accepted."""
        text = "[" * MAX_DEPTH + "]" * MAX_DEPTH

        assert parse(text).data is not None

    def test_nesting_past_limit_rejected(self) -> None:
        """Nesting deeper than MAX_DEPTH is rejected instead of exhausting the stack."""
        problem = problem_of("a: " + "[" * 500 + "]" * 500 + "\n")

        assert problem.message == f"nested more than {MAX_DEPTH} levels deep"
