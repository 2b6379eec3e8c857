"""The declared files (contracts.yaml, syncs.yaml), read with their line numbers.

A mistake in one of them must stop the code location from loading with `file:line: what is wrong, what is
accepted`, not surface at run time as a KeyError or a DuckDB error pointing at nothing. So the files are parsed by
libyaml (as `yaml.safe_load` does) into dicts and lists that remember the line of each key and item, and their
checks collect every problem of a file before raising one `ConfigFileError`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .settings import REPO_ROOT, ConfigurationError

#: libyaml's parser when PyYAML was built with it (the wheels are): ~5x faster than the pure-Python one, and the code
#: location reads its YAML at every load
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class MarkedDict(dict):
    """A YAML mapping that knows its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]

    def line_of(self, key: Any, otherwise: int | None = None) -> int:
        """The line of `key`; for a key that is absent, `otherwise` (say, the line naming this mapping)."""
        return self.key_lines.get(key, self.line if otherwise is None else otherwise)


class MarkedList(list):
    """A YAML sequence that knows its own line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _MarkedLoader(_YAML_LOADER):  # type: ignore[misc, valid-type]
    """libyaml's safe loader, building MarkedDict / MarkedList and noting repeated keys (PyYAML keeps the last)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.repeated: list[tuple[int, str]] = []


def _construct_mapping(loader: _MarkedLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)  # `<<: *anchor` merges, as safe_load does
    mapping = MarkedDict()
    mapping.line, mapping.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in mapping:
                loader.repeated.append((line, f"key {key!r} repeats the one on line {mapping.key_lines[key]}"))
        except TypeError:  # an unhashable key, `? [a, b]: ...`
            loader.repeated.append((line, f"a key must be a plain value, not {type(key).__name__}"))
            continue
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line
    return mapping


def _construct_sequence(loader: _MarkedLoader, node: yaml.SequenceNode) -> MarkedList:
    items = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    items.line, items.item_lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return items


_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def shown_path(path: Path) -> str:
    """The path as a user finds it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


class ConfigFileError(ConfigurationError):
    """Every problem found in one declared file, each as `file:line: message`."""

    def __init__(self, path: Path, problems: list[tuple[int, str]], what_to_do: str = ""):
        self.path, self.problems = path, sorted(problems, key=lambda p: p[0])
        shown = shown_path(path)
        count = f"{len(problems)} problems" if len(problems) > 1 else "A problem"
        lines = [f"{count} in {shown}{f' ({what_to_do})' if what_to_do else ''}:"]
        lines += [f"  {shown}:{line}: {message}" for line, message in self.problems]
        super().__init__("\n".join(lines))


def load_marked(path: Path) -> Any:
    """The file's document with line numbers, or ConfigFileError for a syntax error or a repeated key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(path, [(0, f"cannot be read: {exc}")]) from None
    loader = _MarkedLoader(text)
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(filter(None, [exc.context, exc.problem]))
        raise ConfigFileError(path, [((mark.line + 1) if mark else 0, f"not valid YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(path, [(0, f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if loader.repeated:
        raise ConfigFileError(path, loader.repeated)
    return document


class Problems:
    """Collects a file's problems, so one load reports all of them."""

    def __init__(self, path: Path):
        self.path = path
        self.found: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.found.append((line, message))

    def raise_if_any(self, what_to_do: str = "") -> None:
        if self.found:
            raise ConfigFileError(self.path, self.found, what_to_do)

    def mapping(self, value: Any, line: int, where: str) -> MarkedDict | None:
        """`value` when it is a mapping; else a problem and None."""
        if isinstance(value, MarkedDict):
            return value
        if value is None:
            self.add(line, f"{where} is missing or empty")
        else:
            self.add(line, f"{where} must be a mapping of `key: value` lines, not {_kind(value)}")
        return None

    def entry(
        self, parent: MarkedDict, key: Any, where: str, rule: tuple[re.Pattern[str], str], allowed: Iterable[str]
    ) -> tuple[MarkedDict | None, int]:
        """One named entry of `parent` (a system, a table, a sync): its name checked against `rule` (pattern,
        what it must be), its value a mapping of `allowed` keys. Returns the mapping (None when it is not one)
        and the line of the name."""
        line = parent.line_of(key)
        pattern, must_be = rule
        if not pattern.fullmatch(str(key)):
            self.add(line, f"{where}: the name must be {must_be}")
        spec = self.mapping(parent[key], line, where)
        if spec is not None:
            self.keys(spec, allowed, where)
        return spec, line

    def keys(self, mapping: MarkedDict, allowed: Iterable[str], where: str) -> None:
        """Keys outside `allowed` are typos or unsupported options: name them, with the closest allowed one."""
        allowed = list(allowed)
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
                self.add(mapping.line_of(key), f"{where}: unknown key {key!r} ({hint})")

    def text(
        self, mapping: MarkedDict, key: str, where: str, required: bool = False, line: int | None = None
    ) -> str | None:
        """A string value (numbers and booleans are not names); None when absent or wrong. A required key that is
        absent is reported at `line` (the line naming the mapping), else at the mapping's first line."""
        value = mapping.get(key)
        if value is None:
            if required:
                self.add(mapping.line_of(key, line or mapping.line), f"{where}: `{key}` is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(mapping.line_of(key), f"{where}: `{key}` must be a non-empty text, not {_kind(value)}")
            return None
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__
