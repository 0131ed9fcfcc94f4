"""Class names in configs -> classes of the plugin or of pytorch-metric-learning, built lazily.

A name is resolved when a method is built, not at import, so the harness runs while a class is
still missing (it reports the method as skipped with the reason). A bare name that exists in both
packages (``RankedListLoss``) is an error that names both fully-qualified choices.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

KINDS = ("losses", "miners", "regularizers", "reducers", "distances")
PACKAGES = ("pml_anticollapse", "pytorch_metric_learning")


class MissingClassError(LookupError):
    """A class named in a config cannot be imported (e.g. a plugin class not written yet)."""


def resolve(name: str) -> type:
    """The class for ``name``: a dotted path, or a bare name found in exactly one of the plugin's
    and PML's modules of ``KINDS`` (a bare name of both is a ``ValueError`` naming both)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"class must be a non-empty string, got {name!r}")
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise MissingClassError(f"class {name!r}: cannot import {module_name!r} ({e})") from e
        if not hasattr(module, attr):
            raise MissingClassError(f"class {name!r}: {module_name!r} has no attribute {attr!r}")
        return getattr(module, attr)
    found = {}
    for package in PACKAGES:
        for kind in KINDS:
            try:
                module = importlib.import_module(f"{package}.{kind}")
            except ImportError:
                continue
            if hasattr(module, name):
                found.setdefault(getattr(module, name), f"{package}.{kind}.{name}")
    if len(found) > 1:
        raise ValueError(
            f"class {name!r} is ambiguous: it names {' and '.join(sorted(found.values()))}; "
            "write the fully-qualified name of the one you mean"
        )
    if found:
        return next(iter(found))
    raise MissingClassError(
        f"class {name!r} is in none of {', '.join(p + '.' + k for p in PACKAGES for k in KINDS)}"
    )


def is_spec(obj: Any) -> bool:
    return isinstance(obj, dict) and "class" in obj


def class_names(spec: Any) -> list[str]:
    """Every class named in a (nested) spec, outermost first."""
    out = []
    if is_spec(spec):
        out.append(spec["class"])
        for v in (spec.get("args") or {}).values():
            out.extend(class_names(v))
    elif isinstance(spec, (list, tuple)):
        for v in spec:
            out.extend(class_names(v))
    return out


def build(spec: Any, context: dict[str, Any] | None = None) -> Any:
    """Build ``{class: Name, args: {...}}``; nested specs in ``args`` are built first.

    ``context`` values (``num_classes``, ``embedding_size``) fill constructor parameters of the
    same name that the spec leaves out.
    """
    if spec is None:
        return None
    if not is_spec(spec):
        raise ValueError(f"spec must be a mapping with a 'class' key, got {spec!r}")
    unknown = set(spec) - {"class", "args"}
    if unknown:
        raise ValueError(f"spec for {spec['class']!r} has unknown keys {sorted(unknown)}")
    cls = resolve(spec["class"])
    args = {}
    for k, v in (spec.get("args") or {}).items():
        if is_spec(v):
            v = build(v, context)
        elif isinstance(v, list) and v and all(is_spec(x) for x in v):
            v = [build(x, context) for x in v]
        args[k] = v
    if context:
        try:
            params = inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError):
            params = {}
        for k, v in context.items():
            if k in params and k not in args:
                args[k] = v
    try:
        return cls(**args)
    except TypeError as e:
        raise TypeError(f"cannot build {spec['class']} with args {sorted(args)}: {e}") from e


def check_available(method) -> str | None:
    """None when every class of ``method`` (a ``config.MethodSpec``) imports, else the reason
    it must be skipped. A bare name of both packages raises ``ValueError`` (not a skip)."""
    for spec in (method.loss, method.miner):
        for name in class_names(spec):
            try:
                resolve(name)
            except MissingClassError as e:
                return str(e)
    return None
