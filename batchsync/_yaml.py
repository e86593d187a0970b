"""Strict YAML loading that keeps node positions for error messages.

PyYAML's ``safe_load`` accepts duplicate keys (the last one wins), expands aliases (the "billion
laughs" attack) and forgets where each value came from. batchsync composes the node tree
instead, converts it itself, and keeps the tree so that an error found later, during schema
validation, can still be reported with its line and column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["Document", "YamlProblem", "parse"]

try:
    _Loader: type[Any] = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader

_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"

# A manifest nests five levels deep. The converter recurses once per level, so without a cap a
# file nested a few hundred levels deep would end in RecursionError instead of a located problem.
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class YamlProblem:
    """A problem in the YAML text itself, at 1-based line and column."""

    line: int
    column: int
    message: str


class _Problem(Exception):
    def __init__(self, problem: YamlProblem) -> None:
        self.problem = problem
        super().__init__(problem.message)


@dataclass(slots=True)
class Document:
    """Converted YAML data plus the node tree it came from."""

    data: Any
    root: yaml.Node

    def position(self, path: Sequence[str | int]) -> tuple[int, int]:
        """Return the 1-based line and column of the value at ``path``, or of its nearest parent.

        A string segment selects the value under that mapping key. Use :meth:`key_position` to
        locate the key itself.
        """
        node = self._nearest(path)

        return node.start_mark.line + 1, node.start_mark.column + 1

    def _nearest(self, path: Sequence[str | int]) -> yaml.Node:
        node = self.root
        for segment in path:
            child = _child(node, segment)
            if child is None:
                break
            node = child

        return node

    def key_position(self, path: Sequence[str | int], key: str) -> tuple[int, int]:
        """Return the position of mapping key ``key`` inside the mapping at ``path``."""
        node = self._nearest(path)
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if key_node.value == key:
                    return key_node.start_mark.line + 1, key_node.start_mark.column + 1

        return node.start_mark.line + 1, node.start_mark.column + 1


def parse(text: str) -> Document:
    """Parse ``text`` into plain Python data, keeping positions.

    Raises:
        ValueError: with a :class:`YamlProblem` as its only argument, for malformed YAML,
            duplicate keys, anchors or aliases, and tabs used for indentation.
    """
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise ValueError(_syntax_problem(exc, text)) from None
    if root is None:
        raise ValueError(YamlProblem(1, 1, "the file contains no YAML document"))
    try:
        data = _Converter().convert(root)
    except _Problem as exc:
        raise ValueError(exc.problem) from None

    return Document(data, root)


def _child(node: yaml.Node, segment: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == segment:
                found: yaml.Node = value_node
                return found
    elif (
        isinstance(node, yaml.SequenceNode)
        and isinstance(segment, int)
        and 0 <= segment < len(node.value)
    ):
        item: yaml.Node = node.value[segment]
        return item

    return None


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str) -> YamlProblem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    if mark is not None and "\t" in _line_prefix(text, mark.line, mark.column + 1):
        return YamlProblem(line, column, "a tab is used for indentation; YAML allows only spaces")
    reason = exc.problem or exc.context or "invalid YAML"

    return YamlProblem(line, column, f"invalid YAML: {reason}")


def _line_prefix(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    if line >= len(lines):
        return ""

    return lines[line][:column]


class _Converter:
    """Turn a node tree into dicts, lists and scalars, rejecting what batchsync never accepts."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._constructor = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise _Problem(_at(node, f"nested more than {MAX_DEPTH} levels deep"))
        if id(node) in self._seen:
            raise _Problem(_at(node, "anchors and aliases (& and *) are not allowed in a manifest"))
        self._seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise _Problem(_at(node, f"unsupported YAML tag {_short(node.tag)} on a list"))
            return [self.convert(item, depth + 1) for item in node.value]

        return self._mapping(node, depth)

    def _mapping(self, node: yaml.Node, depth: int) -> dict[Any, Any]:
        if node.tag != _MAP_TAG or not isinstance(node, yaml.MappingNode):
            raise _Problem(_at(node, f"unsupported YAML tag {_short(node.tag)} on a mapping"))
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                raise _Problem(_at(key_node, "mapping keys must be plain strings"))
            key = key_node.value
            if key in result:
                raise _Problem(_at(key_node, f'duplicate key "{key}"; remove one of them'))
            result[key] = self.convert(value_node, depth + 1)

        return result

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag == _STR_TAG:
            return node.value
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise _Problem(_at(node, f"invalid value: {exc.problem}")) from None
        except (ValueError, KeyError, AttributeError):
            # PyYAML's constructors fail with plain errors on a scalar that matches a type's pattern
            # but not its range (2024-13-45) or that carries an explicit tag (!!bool maybe).
            message = f"invalid {_short(node.tag)} value; quote it if it is meant as a string"
            raise _Problem(_at(node, message)) from None


def _short(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _at(node: yaml.Node, message: str) -> YamlProblem:
    return YamlProblem(node.start_mark.line + 1, node.start_mark.column + 1, message)
