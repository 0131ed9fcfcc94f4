"""Typed config sections: a dataclass states each key once (type, default, one line of doc, the
check of its value), and this module validates a YAML mapping against it, fills the defaults and
renders the documentation (``python -m benchmarks --help-config``).

A field is declared with :func:`option`::

    @dataclasses.dataclass
    class TrainingOptions:
        epochs: int = option(10, "training epochs per cell", check=non_negative)

Supported annotations: ``int``, ``float`` (an int is accepted and converted), ``bool``, ``str``,
``Any``, ``X | None``, ``list[X]``, ``dict[str, X]`` and nested dataclasses. A field whose type
is a dataclass is parsed recursively; ``parse`` refuses unknown keys (with a "did you mean").
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from typing import Any

# --------------------------------------------------------------------------- declaring options


def option(default: Any = dataclasses.MISSING, doc: str = "", *, check: Callable | None = None):
    """A dataclass field with a one-line ``doc`` and an optional ``check(value) -> str | None``.

    ``check`` returns None when the value is fine, else what was expected ("a positive
    integer"); mutable defaults (lists, dicts) are copied for every instance.
    """
    meta = {"doc": doc, "check": check}
    if isinstance(default, (list, dict)) or (
        dataclasses.is_dataclass(default) and not isinstance(default, type)
    ):
        value = default
        return dataclasses.field(
            default_factory=lambda: _copy(value), metadata=meta
        )
    return dataclasses.field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


class Check:
    """A value check for :func:`option`: ``Check("a positive integer", lambda v: v > 0)``.

    ``None`` always passes (the annotation decides whether None is allowed); the phrase is used
    in the error message, also when the value has the wrong type.
    """

    def __init__(self, expected: str, ok: Callable[[Any], bool]):
        self.expected = expected
        self.ok = ok

    def __call__(self, value) -> str | None:
        return None if value is None or self.ok(value) else self.expected


positive = Check("a positive number", lambda v: v > 0)
positive_int = Check("a positive integer", lambda v: v > 0)
non_negative = Check("a non-negative number", lambda v: v >= 0)
non_negative_int = Check("a non-negative integer", lambda v: v >= 0)
non_empty = Check("not empty", lambda v: len(v) > 0)


def one_of(*choices: Any) -> Check:
    return Check(f"one of {list(choices)}", lambda v: v in choices)


# --------------------------------------------------------------------------- parsing


def _describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is dict:
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_describe_type(a) for a in args)
    if origin is list:
        return f"list of {_describe_type(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_describe_type(args[1])}" if args else "mapping"
    if tp is Any:
        return "any"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (and converted: int -> float, "1e-4" ->
    float, mapping -> dataclass); ``ValueError`` naming ``where`` otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's own message
            return _convert(value, options[0], where)
        for a in options:
            try:
                return _convert(value, a, where)
            except ValueError:
                pass
        raise ValueError(f"{where} must be {_describe_type(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    if tp in (dict, list):
        if not isinstance(value, tp):
            raise ValueError(f"{where} must be a {_describe_type(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a {_describe_type(tp)}, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args \
            else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a {_describe_type(tp)}, got {value!r}")
        return {
            str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()
        } if args else dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where} must be a non-empty string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported annotation {tp!r}")  # a bug in a schema, not a config


def hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (``from __future__ import annotations`` safe)."""
    return typing.get_type_hints(cls)


def check_keys(data: dict, known: list[str], where: str) -> None:
    """Refuse a key of ``data`` that is not in ``known`` (a typo would otherwise be ignored)."""
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ValueError(
                f"unknown config key {prefix + str(key)!r}{hint} (known: {sorted(known)})"
            )


def parse(cls: type, data: Any, where: str = "", skip: tuple[str, ...] = ()) -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``data``: unknown keys refused,
    missing keys defaulted, every value checked against its annotation and its ``check``.

    Keys in ``skip`` are neither checked nor passed (the caller handles them).
    Raises ``ValueError`` whose message names the dotted key, what was expected and what came.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the config'} must be a mapping, got {data!r}")
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in skip]
    check_keys({k: v for k, v in data.items() if k not in skip}, [f.name for f in fields], where)
    tps = hints(cls)
    kwargs = {}
    for f in fields:
        dotted = f"{where}.{f.name}" if where else f.name
        check = f.metadata.get("check")
        if f.name in data:
            try:
                value = _convert(data[f.name], tps[f.name], dotted)
            except ValueError:
                scalar = typing.get_origin(tps[f.name]) not in (list, dict)
                if isinstance(check, Check) and scalar:
                    raise ValueError(
                        f"{dotted} must be {check.expected}, got {data[f.name]!r}"
                    ) from None
                raise
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        else:
            raise ValueError(f"config key {dotted!r} is required")
        if check is not None:
            expected = check(value)
            if expected:
                raise ValueError(f"{dotted} must be {expected}, got {value!r}")
        kwargs[f.name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(where)
    return obj


def to_dict(obj: Any) -> Any:
    """A parsed config as plain YAML/JSON data (dataclasses -> dicts, recursively)."""
    if callable(getattr(obj, "to_dict", None)):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- documentation


def _default_text(f: dataclasses.Field) -> str:
    import json

    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return ""
    return json.dumps(to_dict(value))


def describe(cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    """One line per key of ``cls`` (recursing into nested dataclasses):
    ``prefix.key  type  default  doc``."""
    lines = []
    tps = hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        dotted = f"{prefix}{f.name}"
        tp = tps[f.name]
        doc = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(tp):
            lines.append(f"{dotted}:  {doc}")
            lines.extend(describe(tp, dotted + "."))
            continue
        lines.append(f"{dotted}  ({_describe_type(tp)}, default {_default_text(f)})")
        if doc:
            lines.extend(wrap(doc, indent="    "))
    return lines


def wrap(text: str, indent: str = "", width: int = 100) -> list[str]:
    """``text`` wrapped to ``width`` columns, every line starting with ``indent``."""
    import textwrap

    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False) or [indent]
