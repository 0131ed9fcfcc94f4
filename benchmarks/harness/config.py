"""Configuration of the benchmark harness: YAML (``yaml.safe_load``), its ``base`` chain, then the
CLI's overrides, checked against one typed schema (the dataclasses below, the dataset and
protocol classes of ``datasets``, ``models.ModelOptions``).

The schema documents itself: ``python -m benchmarks --help-config`` prints every key with its
type, default and meaning (generated from the dataclasses, so it cannot go out of date).

- ``base: digits.yaml`` (a path relative to the config's folder) inherits every key of that
  config; ``dataset.protocols`` and ``methods`` given here replace the inherited ones whole, and
  a ``dataset.name`` other than the inherited one drops the inherited dataset options.
- A config without ``base`` and without ``methods`` takes the method grid of
  ``configs/digits.yaml``.
- Class specs (``loss``, ``miner``): ``{class: Name, args: {...}}``; see ``class_lookup``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from typing import Any

import yaml

from . import class_lookup, datasets, schema
from .models import ModelOptions, model_names
from .schema import non_negative, non_negative_int, option, positive_int

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
#: The main job's config (``python -m benchmarks`` with no ``--config`` / ``--dataset``).
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "glyphs.yaml")
#: The digits benchmark; also the method grid a config without ``base`` and ``methods`` takes.
DIGITS_CONFIG = os.path.join(CONFIG_DIR, "digits.yaml")

# Keys that only select what to run; a run folder may be resumed with other values of these.
SELECTION_KEYS = ("seeds", "device", "threads", "tuning")


@dataclasses.dataclass
class TrainingOptions:
    """The ``training`` section."""

    epochs: int = option(10, "training epochs per cell", check=non_negative_int)
    protocol_epochs: dict = option(
        {}, "epoch budget per protocol, {protocol: epochs}; a protocol not named trains "
        "training.epochs (--epochs and --smoke set every protocol's)"
    )
    batch_size: int = option(64, "samples per batch", check=positive_int)
    m_per_class: int = option(
        8, "samplers.MPerClassSampler(m=...); raised when m x classes < batch_size",
        check=positive_int,
    )
    iterations_per_epoch: int | None = option(
        None, "null: len(train) // batch_size", check=positive_int
    )
    lr_trunk: float = option(1e-3, "Adam learning rate of the trunk", check=non_negative)
    lr_embedder: float = option(1e-3, "Adam learning rate of the embedder", check=non_negative)
    lr_loss: float = option(1e-2, "Adam learning rate of the loss's parameters (proxies)",
                            check=non_negative)
    weight_decay: float = option(0.0, "L2 weight decay of trunk and embedder", check=non_negative)
    amp: bool = option(False, "torch.autocast: float16 + GradScaler on CUDA, bfloat16 on CPU")
    num_workers: int = option(0, "DataLoader workers", check=non_negative_int)
    log_freq: int = option(5, "record-keeper: log every this many iterations", check=positive_int)
    tensorboard: bool = option(False, "also write TensorBoard events (if installed)")

    def epochs_for(self, protocol: str) -> int:
        """The epochs a cell of ``protocol`` trains."""
        return int(self.protocol_epochs.get(protocol, self.epochs))

    def validate(self, where: str) -> None:
        for name, value in self.protocol_epochs.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"{where}.protocol_epochs.{name} must be a non-negative integer, got {value!r}"
                )
        if self.batch_size % self.m_per_class:
            raise ValueError(
                f"{where}.batch_size must be a multiple of {where}.m_per_class, "
                f"got {self.batch_size} and {self.m_per_class}"
            )


@dataclasses.dataclass
class EvaluationOptions:
    """The ``evaluation`` section."""

    batch_size: int = option(256, "tester batch size", check=positive_int)
    metrics: list[str] = option(
        ["precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"],
        "AccuracyCalculator metrics (k = max_bin_count)",
        check=schema.Check("a non-empty list of names", lambda v: len(v) > 0),
    )
    interval: int = option(
        0, "also test every this many epochs while training (and at the last epoch): the "
        "per-epoch curve of each cell; 0: only at the end", check=non_negative_int,
    )

    def validate(self, where: str) -> None:
        from .pml2.testing import known_metrics

        known = known_metrics()
        unknown = [m for m in self.metrics if m not in known]
        if unknown:
            raise ValueError(f"{where}.metrics must be names among {known}, got {unknown}")
        if "mean_average_precision_at_r" not in self.metrics:
            raise ValueError(
                f"{where}.metrics must include mean_average_precision_at_r (the primary metric "
                f"of the report and the hooks), got {self.metrics}"
            )


@dataclasses.dataclass
class TuningOptions:
    """The ``tuning`` section: the budget of ``python -m benchmarks tune`` (not of a plain run)."""

    trials: int = option(30, "trials per method (the same for every method)", check=positive_int)
    folds: int = option(
        4, "validation folds: the protocol's own validation forms where it has them (glyphs: "
        "folds of the training characters; held-out training fonts), else class-disjoint "
        "folds of its training classes", check=positive_int)
    protocol: str | None = option(
        None, "the protocol searched on when per_protocol is false (default: the first); a run "
        "of several protocols needs per_protocol: true (one protocol's validation folds would "
        "hold another's test items)"
    )
    per_protocol: bool = option(
        False, "search every protocol on its own validation forms: one search per protocol and "
        "method, each protocol's cells trained with its own chosen settings"
    )
    search: dict = option(
        {}, "search space shared by every learned method (a method's own search adds to it)"
    )

    def validate(self, where: str) -> None:
        if self.folds < 2:
            raise ValueError(f"{where}.folds must be an integer >= 2, got {self.folds}")


@dataclasses.dataclass
class MethodSpec:
    """One entry of ``methods`` (one row of the table)."""

    name: str = option(dataclasses.MISSING, "row name: folder, table row, plot label")
    description: str | None = option(None, "one line for --list-methods")
    loss: dict | None = option(None, "class spec {class: Name, args: {...}}")
    miner: dict | None = option(None, "class spec, optional")
    no_learning: bool = option(False, "raw inputs, L2-normalised, no training (the floor row)")
    search: dict | None = option(
        None, "hyperparameter search space, dotted key -> distribution (see search_space.py)"
    )
    baseline: str | None = option(
        None, "the row this one adds a method to: the report shows their paired effect"
    )

    def validate(self, where: str) -> None:
        if not self.no_learning and self.loss is None:
            raise ValueError(f"method {self.name!r} must give a 'loss' (or no_learning: true)")
        for key in ("loss", "miner"):
            spec = getattr(self, key)
            if spec is not None and not class_lookup.is_spec(spec):
                raise ValueError(
                    f"method {self.name!r}: {key} must be a mapping with a 'class' key, "
                    f"got {spec!r}"
                )


def _device_check(value: str) -> str | None:
    import torch

    if value == "auto":
        return None
    try:
        torch.device(value)
    except RuntimeError:
        return "auto, cpu, cuda or cuda:N"
    return None


@dataclasses.dataclass
class Config:
    """A whole config."""

    name: str = option("digits-default", "free text; the default run folder's name")
    seeds: list[int] = option([0, 1, 2], "one training per (protocol, method, seed)")
    device: str = option("auto", "auto | cpu | cuda | cuda:N", check=_device_check)
    threads: int | None = option(None, "torch (and faiss) CPU threads", check=positive_int)
    dataset: datasets.DatasetSection | None = option(
        None, "the dataset and its protocols (see the datasets below)"
    )
    model: ModelOptions = option(ModelOptions(), "the trunk + embedder")
    training: TrainingOptions = option(TrainingOptions(), "the trainer")
    evaluation: EvaluationOptions = option(EvaluationOptions(), "the tester")
    tuning: TuningOptions = option(TuningOptions(), "budget and shared space of the search")
    methods: list[MethodSpec] = option([], "the grid; each entry is one row of the table")

    def validate(self, where: str) -> None:
        if not self.seeds:
            raise ValueError(f"seeds must be a non-empty list of integers, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must not repeat, got {self.seeds!r}")
        bad = [s for s in self.seeds if not 0 <= s < 2**32]
        if bad:  # numpy's seeding takes [0, 2**32)
            raise ValueError(f"seeds must be integers in [0, 2**32), got {bad} (--seeds / seeds)")
        if not self.methods:
            raise ValueError("methods must be a non-empty list of method entries")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique, got {names}")
        for m in self.methods:
            if m.baseline is not None and (m.baseline not in names or m.baseline == m.name):
                raise ValueError(
                    f"method {m.name!r}: baseline must name another method of the grid, got "
                    f"{m.baseline!r}; known: {names}"
                )

    def method(self, name: str) -> MethodSpec:
        for m in self.methods:
            if m.name == name:
                return m
        known = [m.name for m in self.methods]
        raise ValueError(f"methods: no method named {name!r}; known: {known}")

    def to_dict(self) -> dict:
        return {f.name: schema.to_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}


# ------------------------------------------------------------------------- reading and checking


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` updated recursively by ``override`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"config must be an existing YAML file, got {path!r}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"config {path!r} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"config {path!r} must hold a mapping at the top, got {type(data).__name__}"
        )
    return data


def merge_over(base: dict, user: dict) -> dict:
    """``user`` over ``base`` with the config rules: ``dataset.protocols``,
    ``training.protocol_epochs`` and ``methods`` replace whole; another ``dataset.name`` replaces
    the whole dataset section; the base's ``training.protocol_epochs`` keeps only the protocols
    that remain."""
    base = copy.deepcopy(base)
    user_ds = user.get("dataset")
    base_training = base.get("training") if isinstance(base.get("training"), dict) else {}
    if isinstance(user.get("training"), dict) and "protocol_epochs" in user["training"]:
        base_training.pop("protocol_epochs", None)
    if isinstance(user_ds, dict) and isinstance(base.get("dataset"), dict):
        replaced = False
        if user_ds.get("name", base["dataset"].get("name")) != base["dataset"].get("name"):
            base.pop("dataset")
            replaced = True
        elif "protocols" in user_ds:
            base["dataset"].pop("protocols", None)
            replaced = True
        per = base_training.get("protocol_epochs")
        if replaced and isinstance(per, dict):
            kept = user_ds.get("protocols") or {}
            base_training["protocol_epochs"] = {k: v for k, v in per.items() if k in kept}
    if user.get("methods"):
        base.pop("methods", None)
    return deep_merge(base, user)


def read_config(path: str | None = None, _depth: int = 0) -> dict:
    """The raw mapping of a YAML config merged over its ``base`` (not yet checked)."""
    path = DEFAULT_CONFIG if path is None else path
    if _depth > 5:
        raise ValueError(f"config {path!r}: 'base' chain is too deep (a cycle?)")
    user = read_yaml(path)
    base_name = user.pop("base", None)
    base = {}
    if base_name is not None:
        base = read_config(os.path.join(os.path.dirname(os.path.abspath(path)), base_name),
                           _depth + 1)
    cfg = merge_over(base, user)
    if not cfg.get("methods") and os.path.abspath(path) != os.path.abspath(DIGITS_CONFIG):
        cfg["methods"] = read_yaml(DIGITS_CONFIG).get("methods", [])
    return cfg


def parse_config(raw: dict) -> Config:
    """Check a raw mapping against the schema and fill the defaults; ``ValueError`` names the
    key, what was expected and what came."""
    if not isinstance(raw, dict):
        raise ValueError(f"the config must be a mapping, got {raw!r}")
    cfg = schema.parse(Config, raw, "", skip=("dataset",))
    cfg.dataset = datasets.parse_section(raw.get("dataset") or {"name": "digits"})
    unknown = sorted(set(cfg.training.protocol_epochs) - set(cfg.dataset.protocols))
    if unknown:
        raise ValueError(
            f"training.protocol_epochs.{unknown[0]}: no protocol named {unknown[0]!r}; "
            f"known: {sorted(cfg.dataset.protocols)}"
        )
    return cfg


def load_config(path: str | None = None) -> Config:
    """``parse_config(read_config(path))``."""
    return parse_config(read_config(path))


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML, with "3e-4" read as a float (YAML 1.1 wants "3.0e-4")."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_dotted(cfg: dict, dotted: str, value: Any) -> None:
    """``cfg["a"]["b"] = value`` for ``dotted="a.b"`` (used by ``--set a.b=value``)."""
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def identity(cfg: Config, provenance: dict | None = None) -> dict:
    """What fixes the results: the config but its selection keys and method descriptions, plus
    the data's provenance (e.g. a font manifest's hash) per protocol."""
    out = {k: v for k, v in cfg.to_dict().items() if k not in SELECTION_KEYS}
    if not out["evaluation"].get("interval"):  # the default: a run from before the key existed
        out["evaluation"].pop("interval", None)
    out["methods"] = [{k: v for k, v in m.items() if k != "description"} for m in out["methods"]]
    out["provenance"] = provenance or {}
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def help_text(with_datasets: bool = True) -> str:
    """``--help-config``: every key of the schema, generated from the dataclasses.

    ``with_datasets=False``: the keys of every config, and the names of the registered
    datasets only (the README's section; each dataset's options come with ``--help-config``).
    """
    if with_datasets:
        dataset_lines = [
            "dataset: name + the options of that dataset + protocols "
            "(name -> {type: ..., options}):",
            *datasets.describe(),
        ]
    else:
        dataset_lines = [
            f"dataset.name: one of {', '.join(datasets.dataset_names())}; the options of each "
            "dataset and its protocols: python -m benchmarks --help-config",
        ]
    wrap = schema.wrap
    lines = [
        *wrap("Config keys (YAML; any key can also be given as --set KEY=VALUE): key (type, "
              "default), then its meaning."),
        "",
        *schema.describe(Config, skip=("dataset", "methods")),
        "",
        *wrap(f"model.name: one of {', '.join(model_names())}", width=100),
        "",
        "methods: a list of entries, each:",
        *("  " + s for s in schema.describe(MethodSpec, "methods[].")),
        "",
        *(line for text in dataset_lines for line in wrap(text, width=100)),
        "",
        *wrap(
            "Class specs: {class: Name, args: {...}}; Name is a bare class name of "
            "pml_anticollapse.<kind> or pytorch_metric_learning.<kind> (kind: "
            f"{', '.join(class_lookup.KINDS)}; a name in both is an error naming both), or a "
            "dotted path. A spec inside args is built first; num_classes and embedding_size "
            "are filled in when the constructor takes them."
        ),
    ]
    return "\n".join(lines)


def schema_markdown() -> str:
    """The documentation's config reference (the ``config-schema`` part of ``docs/``, built by
    ``scripts/docs_pages.py``): every key with each dataset's options, as ``--help-config``
    prints it."""
    return f"```text\n{help_text(with_datasets=True)}\n```\n"
