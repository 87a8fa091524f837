"""Typed, frozen configuration built from YAML, validated before any work starts.

A configuration is a frozen dataclass whose fields carry their own rules
(``field(metadata=positive())``). :func:`from_dict` builds one from a mapping
and collects every problem (unknown key, wrong type, value out of range, and the
dataclass's own ``_cross_checks``) into one :class:`ConfigError` whose message
lists them all, with a "did you mean" suggestion for misspelt keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError

__all__ = ["positive", "non_negative", "rule", "from_dict", "load_yaml", "to_plain", "problems_of"]


def rule(predicate: Callable[[Any], bool], text: str) -> dict[str, Any]:
    """Field metadata: ``predicate(value)`` must hold; ``text`` says what is expected."""
    return {"rule": predicate, "text": text}


def positive() -> dict[str, Any]:
    """Field metadata: the value must be > 0."""
    return rule(lambda v: v > 0, "must be > 0")


def non_negative() -> dict[str, Any]:
    """Field metadata: the value must be >= 0."""
    return rule(lambda v: v >= 0, "must be >= 0")


def to_plain(obj: Any) -> Any:
    """Tuples to lists, recursively: what YAML and JSON hold."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; return the coerced value or None (problem noted)."""
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {value!r}")
            return None
        items = [_coerce(v, inner, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return None if any(i is None for i in items) else tuple(items)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    if tp is str and isinstance(value, str):
        return value
    problems.append(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return None


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or 'the file'}: expected a mapping of keys to values, got {data!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            problems.append(f"unknown key {name!r}{hint}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{name}.", problems)
            continue
        coerced = _coerce(value, tp, name, problems)
        if coerced is None:
            continue
        meta = fields[key].metadata
        if "rule" in meta and not meta["rule"](coerced):
            problems.append(f"{name}: {meta['text']}, got {value!r}")
            continue
        kwargs[key] = coerced
    if any(v is None for v in kwargs.values()):
        return None
    return cls(**kwargs)


def from_dict(cls: type, data: Any, source: str = "configuration") -> Any:
    """Build dataclass ``cls`` from ``data``, raising one ConfigError listing every problem."""
    problems: list[str] = []
    obj = _build(cls, data, "", problems)
    if obj is not None and not problems and hasattr(obj, "_cross_checks"):  # never judge defaults for a bad key
        problems += obj._cross_checks()
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid {source}:\n{lines}")
    return obj


def problems_of(exc: ConfigError) -> list[str]:
    """The individual problems listed in a :func:`from_dict` error (to merge them into another report)."""
    return [line.strip()[2:] for line in str(exc).splitlines()[1:]]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one clear error for a missing, unreadable, binary or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (it is not UTF-8); a parameter file is YAML text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data
