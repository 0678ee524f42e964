"""Reading configuration YAML safely: bounded in size, alias expansion and depth, secrets never quoted.

YAML aliases let a few hundred bytes name billions of values ("billion laughs"); PyYAML shares
aliased nodes, but interpolation, merge keys (``<<``) and validation copy them. So the composed
document is measured as if every alias were expanded, and refused beyond :data:`MAX_NODES`
values or :data:`MAX_DEPTH` levels, before anything is built from it. Error messages give the
line and column, and quote the offending line only when the document holds no secret.
"""

from __future__ import annotations

from typing import Any

import yaml

from grpcmesh.config.secrets import may_hold_secret
from grpcmesh.errors import ConfigError

MAX_BYTES = 1024 * 1024
"""Largest configuration document accepted (1 MiB; real ones are a few KiB)."""

MAX_NODES = 20_000
"""Most values (scalars, mappings, lists) a document may hold with every alias expanded (real ones: hundreds)."""

MAX_DEPTH = 32
"""Deepest nesting accepted (configuration sections are at most four or five levels deep)."""


class _TooLarge(Exception):
    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one) and deep nesting.

    Nesting is refused while scanning, before the parser and composer recurse into it (they
    would hit Python's recursion limit, slowly, on a line of ten thousand ``[``).
    """

    composed = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # Counted while composing too, so a long flat list is refused before it is all in memory.
        self.composed += 1
        if self.composed > MAX_NODES:
            raise _TooLarge(_too_many(), self.get_mark())
        return super().compose_node(parent, index)

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _TooLarge(f"nested more than {MAX_DEPTH} levels deep", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        if len(self.indents) >= MAX_DEPTH:
            raise _TooLarge(f"nested more than {MAX_DEPTH} levels deep", self.get_mark())
        return bool(super().add_indent(column))


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in mapping
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key is a mapping or list; keys must be plain names", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {_short(key)} appears twice in one mapping; keep one", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _short(key: Any) -> str:
    shown = repr(key)
    return shown if len(shown) <= 60 else shown[:57] + "..."


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, source: str) -> Any:
    """The document in ``text`` as Python data; any problem is a :class:`ConfigError` naming ``source``."""
    if len(text) > MAX_BYTES:
        raise ConfigError(
            f"{source}: the configuration is {len(text)} characters; at most {MAX_BYTES} are accepted",
            file=source,
        )
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters already here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return loader.construct_document(node)
    except _TooLarge as exc:
        raise ConfigError(f"{source}: {_where(exc.mark)}{exc.problem}", file=source) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_describe(exc, text)}", file=source) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep", file=source) from None
    except Exception as exc:  # odd values fail in other ways (a date 2001-02-30, ``!!int abc``)
        # Such messages quote the value (int("...")), so they are shown only when no line may hold a secret.
        detail = "" if any(may_hold_secret(line) for line in text.splitlines()) else f": {exc}"
        raise ConfigError(f"{source}: not valid YAML: {type(exc).__name__}{detail}", file=source) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_expanded_size(root: yaml.Node) -> None:
    """Raise ``_TooLarge`` if ``root`` with its aliases expanded exceeds the node or depth bound."""
    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in active:
            raise _TooLarge("a YAML alias refers to a node that contains it; remove the cycle", node.start_mark)
        if depth > MAX_DEPTH:
            raise _TooLarge(f"nested more than {MAX_DEPTH} levels deep", node.start_mark)
        count, height = 1, 0
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            active.add(id(node))
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            for child in children:
                child_count, child_height = measure(child, depth + 1)
                count += child_count
                height = max(height, child_height + 1)
                if count > MAX_NODES:
                    raise _TooLarge(_too_many(), node.start_mark)
                if depth + height > MAX_DEPTH:
                    raise _TooLarge(f"nested more than {MAX_DEPTH} levels deep", node.start_mark)
            active.discard(id(node))
        sizes[id(node)] = (count, height)
        return count, height

    measure(root, 0)


def _too_many() -> str:
    return f"the configuration expands to more than {MAX_NODES} values (through YAML aliases?); write it out plainly"


def _where(mark: yaml.Mark | None) -> str:
    return "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}: "


def _describe(exc: yaml.MarkedYAMLError, text: str) -> str:
    """The parser's problem and position; the line itself only when no line of ``text`` may hold a secret."""
    mark = exc.problem_mark or exc.context_mark
    parts = [part for part in (exc.context, exc.problem) if part]
    message = _where(mark) + ", ".join(parts or ["cannot be parsed"])
    if mark is not None and not any(may_hold_secret(line) for line in text.splitlines()):
        lines = text.splitlines()
        if 0 <= mark.line < len(lines):
            line = lines[mark.line]
            if len(line) <= 120:
                message += f"\n    {line}\n    {' ' * mark.column}^"
    return message
