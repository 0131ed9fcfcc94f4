"""Datasets of the harness and their evaluation protocols, chosen by name through a registry.

A config's ``dataset`` section names a registered dataset and its protocols::

    dataset:
      name: digits                 # a registered dataset (register_dataset)
      split_seed: 0                # options of that dataset (fields of its dataclass)
      protocols:                   # name -> entry; "type" is a protocol registered for it
        zero_shot: {type: zero_shot, train_classes: [0, 1, 2, 3, 4], test_classes: [5, 6, 7, 8, 9]}

Every key is checked when the config is read (unknown keys, types, each class's ``validate``),
before a run folder is touched; the data are built afterwards, once per run, by ``build``.

The API (stable: other modules, e.g. ``datasets/glyphs.py``, code against it)
-------------------------------------------------------------------------------

- :class:`ProtocolData` — what one protocol hands to training and evaluation: ``train`` (a
  dataset with ``.labels``), ``query`` and ``reference`` (``reference=None``: the query set is
  its own reference set, each query's own item excluded — the usual DML protocol; otherwise
  queries are ranked against a distinct reference set), ``num_train_classes``, ``input_kind``
  (``"vector"`` or ``"image"``), ``description`` (one line for the report) and ``provenance``
  (a JSON-able dict, e.g. a font-manifest hash, written to results.json and part of the run's
  identity, so that a run is never resumed on different data).
- :func:`register_dataset` ``(name)`` — class decorator for a **dataclass** of the dataset's
  options, subclass of :class:`DatasetBase`. Its fields are the keys allowed next to ``name``
  in the config (declare them with ``schema.option(default, "doc", check=...)``: they are
  documented by ``--help-config``). Optional hooks: ``validate(self, where)`` (raise
  ``ValueError`` naming ``where + ".key"``), ``build(self, protocols)``, and the class attribute
  ``default_protocols`` (the entries used when the config gives no ``protocols``).
- :func:`register_protocol` ``(dataset, type)`` — class decorator for a **dataclass** of one
  protocol type's options (the keys of a ``protocols`` entry besides ``type``), subclass of
  :class:`ProtocolBase`, with ``build(self, dataset, name) -> ProtocolData`` (``dataset`` is the
  parsed options object of the dataset) and optionally ``validate(self, where)``.
- :func:`parse_section` ``(mapping) -> DatasetSection`` (used by the config schema) and
  :func:`build` ``(section) -> {protocol name: ProtocolData}``.

How to add a dataset protocol
-----------------------------

One class and one YAML entry. In the dataset's module (e.g. ``datasets/digits.py``)::

    @register_protocol("digits", "odd_even")
    @dataclasses.dataclass
    class OddEven(ProtocolBase):
        \"\"\"Train on odd digits, retrieve even ones.\"\"\"
        def build(self, dataset, name):
            ...
            return ProtocolData(name, train, query, num_train_classes=5,
                                input_kind="vector", description="odd -> even")

then ``dataset.protocols.my_name: {type: odd_even}`` in a config. A protocol in another module
registers the same way; the module must be imported before the config is read (add it to
``BUILTIN_MODULES`` below for a built-in one).

How to add a dataset
--------------------

A new module ``datasets/<name>.py`` with one ``@register_dataset("<name>")`` dataclass and its
``@register_protocol("<name>", ...)`` classes; add ``"<name>"`` to ``BUILTIN_MODULES``; a preset
``configs/<name>.yaml``. Nothing else changes: the CLI's ``--dataset`` choices, the config
checks and ``--help-config`` come from the registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from typing import Any, ClassVar

import torch

from .. import schema

#: Built-in dataset modules (``benchmarks.harness.datasets.<name>``), imported on first lookup;
#: a name whose module does not exist (yet) is passed over.
BUILTIN_MODULES = ("digits", "real", "glyphs")


@dataclasses.dataclass
class ProtocolData:
    """One evaluation protocol: training set, query set and (optionally distinct) reference set.

    ``reference=None`` means the query set is its own reference set (leave-one-out retrieval).
    """

    name: str
    train: torch.utils.data.Dataset
    query: torch.utils.data.Dataset
    num_train_classes: int
    input_kind: str  # "vector" or "image"
    description: str
    reference: torch.utils.data.Dataset | None = None
    provenance: dict = dataclasses.field(default_factory=dict)
    #: files the run folder should hold a copy of, {name in the run folder: source path}
    #: (e.g. the glyphs' sample grid); not part of the run's identity
    extra_files: dict = dataclasses.field(default_factory=dict)

    @property
    def test(self) -> torch.utils.data.Dataset:
        """The query set (the name of the single test set before ``reference`` existed)."""
        return self.query


class TensorPairs(torch.utils.data.Dataset):
    """(x[i], y[i]) pairs with a ``labels`` attribute, as PML's samplers and testers expect."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor):
        if x.shape[0] != labels.shape[0]:
            raise ValueError(
                f"x and labels must have the same length, got {x.shape[0]} and {labels.shape[0]}"
            )
        self.x = x
        self.labels = labels

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.labels[i]


class ProtocolBase:
    """Base of a protocol's options dataclass (see the module docstring)."""

    def validate(self, where: str) -> None:
        """Raise ``ValueError`` naming ``where.<key>`` when the options cannot work."""

    def build(self, dataset: DatasetBase, name: str) -> ProtocolData:
        raise NotImplementedError

    def validation_forms(self, k: int) -> list[ProtocolBase] | None:
        """``k`` forms of this protocol that read no test data, for the hyperparameter search
        (e.g. held-out training fonts); None: the search folds the training classes instead."""
        return None


class DatasetBase:
    """Base of a dataset's options dataclass (see the module docstring)."""

    #: ``protocols`` entries used when the config gives none (name -> {type: ..., ...}).
    default_protocols: ClassVar[dict[str, dict]] = {}

    def validate(self, where: str) -> None:
        """Raise ``ValueError`` naming ``where.<key>`` when the options cannot work."""

    def build(self, protocols: dict[str, ProtocolBase]) -> dict[str, ProtocolData]:
        """Every protocol's data, by name (override to share work between protocols)."""
        return {name: p.build(self, name) for name, p in protocols.items()}


_DATASETS: dict[str, type] = {}
_PROTOCOLS: dict[str, dict[str, type]] = {}
_loaded = False


def register_dataset(name: str):
    """Class decorator: register the dataset options dataclass ``cls`` under ``name``."""

    def deco(cls: type) -> type:
        if not dataclasses.is_dataclass(cls) or not issubclass(cls, DatasetBase):
            raise TypeError(f"register_dataset({name!r}) needs a DatasetBase dataclass, got {cls}")
        if name in _DATASETS and _DATASETS[name] is not cls:
            raise ValueError(f"dataset {name!r} is registered twice ({_DATASETS[name]}, {cls})")
        _DATASETS[name] = cls
        cls.dataset_name = name
        return cls

    return deco


def register_protocol(dataset: str, type_name: str):
    """Class decorator: register the protocol options dataclass ``cls`` as ``type_name`` of
    ``dataset`` (the dataset may be registered before or after)."""

    def deco(cls: type) -> type:
        if not dataclasses.is_dataclass(cls) or not issubclass(cls, ProtocolBase):
            raise TypeError(
                f"register_protocol({dataset!r}, {type_name!r}) needs a ProtocolBase dataclass, "
                f"got {cls}"
            )
        table = _PROTOCOLS.setdefault(dataset, {})
        if type_name in table and table[type_name] is not cls:
            raise ValueError(f"protocol {dataset}/{type_name} is registered twice")
        table[type_name] = cls
        cls.protocol_type = type_name
        return cls

    return deco


def load_builtin() -> None:
    """Import the built-in dataset modules (once): they register datasets, protocols and, for
    their own inputs, models."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        full = f"{__name__}.{mod}"
        if importlib.util.find_spec(full) is not None:
            importlib.import_module(full)


def dataset_names() -> tuple[str, ...]:
    """Registered dataset names, built-ins first in ``BUILTIN_MODULES`` order (not import order,
    which depends on what a caller happened to import first), then plug-ins as registered."""
    load_builtin()
    rank = {f"{__name__}.{mod}": i for i, mod in enumerate(BUILTIN_MODULES)}
    return tuple(
        sorted(_DATASETS, key=lambda name: rank.get(_DATASETS[name].__module__, len(rank)))
    )


def dataset_class(name: str) -> type:
    load_builtin()
    if name not in _DATASETS:
        raise ValueError(f"dataset.name must be one of {list(_DATASETS)}, got {name!r}")
    return _DATASETS[name]


def protocol_types(dataset: str) -> dict[str, type]:
    load_builtin()
    return dict(_PROTOCOLS.get(dataset, {}))


@dataclasses.dataclass
class DatasetSection:
    """The parsed ``dataset`` section: the dataset's options and its protocols, by name."""

    name: str
    options: DatasetBase
    protocols: dict[str, ProtocolBase]

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, **schema.to_dict(self.options)}
        out["protocols"] = {
            n: {"type": p.protocol_type, **schema.to_dict(p)} for n, p in self.protocols.items()
        }
        return out


def parse_section(data: Any, where: str = "dataset") -> DatasetSection:
    """Check the ``dataset`` mapping against the registry; ``ValueError`` naming the key."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {data!r}")
    name = data.get("name", "digits")
    cls = dataset_class(name)
    options = schema.parse(cls, data, where, skip=("name", "protocols"))
    entries = data.get("protocols")
    if entries is None:
        entries = cls.default_protocols
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{where}.protocols must name at least one protocol, got {entries!r}")
    types = protocol_types(name)
    protocols = {}
    for pname, entry in entries.items():
        pwhere = f"{where}.protocols.{pname}"
        if not isinstance(entry, dict):
            raise ValueError(f"{pwhere} must be a mapping, got {entry!r}")
        kind = entry.get("type")
        if kind not in types:
            raise ValueError(
                f"{pwhere}.type must be one of {sorted(types)} for dataset {name!r}, got {kind!r}"
            )
        protocols[str(pname)] = schema.parse(types[kind], entry, pwhere, skip=("type",))
    return DatasetSection(name, options, protocols)


def build(section: DatasetSection) -> dict[str, ProtocolData]:
    """Every protocol's data of a parsed ``dataset`` section, by protocol name."""
    out = section.options.build(section.protocols)
    missing = set(section.protocols) - set(out)
    if missing:
        raise ValueError(f"dataset {section.name!r} built no data for protocols {sorted(missing)}")
    return out


def describe() -> list[str]:
    """``--help-config`` lines for every registered dataset and protocol."""
    lines = []
    for name in dataset_names():
        cls = _DATASETS[name]
        lines.append(f"dataset.name: {name}  -- {(cls.__doc__ or '').strip().splitlines()[0]}")
        lines.extend("  " + s for s in schema.describe(cls, "dataset."))
        for kind, pcls in protocol_types(name).items():
            doc = (pcls.__doc__ or "").strip().splitlines()[0]
            lines.append(f"  dataset.protocols.<name>.type: {kind}  -- {doc}")
            lines.extend("    " + s for s in schema.describe(pcls, "dataset.protocols.<name>."))
    return lines
