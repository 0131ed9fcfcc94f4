"""Class names in configs -> classes of the plugin or of pytorch-metric-learning, built lazily.

A name is resolved when a method is built, not at import. A name that exists nowhere (a typo)
is an :class:`UnknownClassError` with a "did you mean" over the classes of both packages; only a
class whose module exists but cannot be imported here (a dependency missing from this
environment) is a :class:`MissingClassError`, and its method is skipped with the reason. A bare
name that exists in both packages (``RankedListLoss``) is an error that names both
fully-qualified choices.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
from typing import Any

KINDS = ("losses", "miners", "regularizers", "reducers", "distances")
PACKAGES = ("pml_anticollapse", "pytorch_metric_learning")


class MissingClassError(LookupError):
    """A class named in a config exists but cannot be imported in this environment (its module
    needs a package that is not installed): the method is skipped."""


class UnknownClassError(MissingClassError, ValueError):
    """A class name that exists nowhere (a typo): an error, never a skip."""


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, sorted(set(choices)), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def known_class_names() -> list[str]:
    """Every public class name of the plugin's and PML's modules of ``KINDS``."""
    names = []
    for package in PACKAGES:
        for kind in KINDS:
            try:
                module = importlib.import_module(f"{package}.{kind}")
            except ImportError:
                continue
            names += [k for k, v in vars(module).items()
                      if inspect.isclass(v) and not k.startswith("_")]
    return names


def _module_exists(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):  # a parent that is not a package, or is missing
        return False


def _import_dotted(name: str):
    """The module of a dotted class name; a module that does not exist is an
    :class:`UnknownClassError`, one that exists but fails to import a :class:`MissingClassError`."""
    module_name = name.rpartition(".")[0]
    if not _module_exists(module_name):
        parent = module_name.rpartition(".")[0]
        choices = [f"{p}.{k}" for p in PACKAGES for k in KINDS]
        if parent and _module_exists(parent):
            import pkgutil

            try:
                path = importlib.import_module(parent).__path__
                choices += [f"{parent}.{m.name}" for m in pkgutil.iter_modules(path)]
            except (ImportError, AttributeError):
                pass
        raise UnknownClassError(
            f"class {name!r}: there is no module {module_name!r}"
            + _did_you_mean(module_name, choices)
        )
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise MissingClassError(f"class {name!r}: cannot import {module_name!r} ({e})") from e


def resolve(name: str) -> type:
    """The class for ``name``: a dotted path, or a bare name found in exactly one of the plugin's
    and PML's modules of ``KINDS`` (a bare name of both is a ``ValueError`` naming both)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"class must be a non-empty string, got {name!r}")
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        module = _import_dotted(name)
        if not hasattr(module, attr):
            choices = [k for k, v in vars(module).items() if inspect.isclass(v)]
            raise UnknownClassError(
                f"class {name!r}: {module_name!r} has no attribute {attr!r}"
                + _did_you_mean(attr, choices)
            )
        return getattr(module, attr)
    found, failed = {}, []
    for package in PACKAGES:
        for kind in KINDS:
            try:
                module = importlib.import_module(f"{package}.{kind}")
            except ImportError as e:
                if _module_exists(f"{package}.{kind}"):
                    failed.append(f"{package}.{kind} ({e})")
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
    where = f"class {name!r} is in none of {{{', '.join(PACKAGES)}}}.{{{', '.join(KINDS)}}}"
    if failed:  # it may be in a module that this environment cannot import
        raise MissingClassError(f"{where}; cannot import {'; '.join(failed)}")
    raise UnknownClassError(where + _did_you_mean(name, known_class_names()))


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
    it must be skipped (a module that this environment cannot import). A name that exists
    nowhere (:class:`UnknownClassError`) or a bare name of both packages raises ``ValueError``
    naming the method: never a skip."""
    for spec in (method.loss, method.miner):
        for name in class_names(spec):
            try:
                resolve(name)
            except UnknownClassError as e:
                raise UnknownClassError(f"method {method.name!r}: {e}") from None
            except MissingClassError as e:
                return str(e)
    return None
