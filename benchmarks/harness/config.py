"""Configuration of the benchmark harness: YAML (``yaml.safe_load``) merged over defaults, then CLI.

Schema (every key optional; a missing key takes the value of ``DEFAULTS`` below; a preset such as
``configs/cub.yaml`` may give only the keys it changes and inherits the method grid of
``configs/default.yaml`` when it has no ``methods`` key)::

    base: default.yaml            # optional: inherit every key of another config (relative path)
    name: digits-default          # free text, copied into results.json
    seeds: [0, 1, 2]              # one training per (protocol, method, seed)
    device: auto                  # auto | cpu | cuda | cuda:N
    dataset:
      name: digits                # digits | cub | cars196 | sop
      root: null                  # local data root for cub/cars196/sop (CLI --data-root)
      image_size: 224             # cub/cars196/sop: side of the square crop fed to the backbone
      augment_shift: 0            # digits: shift training images by up to this many pixels
      split_seed: 0               # digits superclass: seed of the held-out split
      protocols:                  # digits only; each entry is one evaluation protocol
        zero_shot:                #   train on some digits, test retrieval on unseen digits
          type: zero_shot
          train_classes: [0, 1, 2, 3, 4]
          test_classes: [5, 6, 7, 8, 9]
        superclass:               #   train on coarse labels, test fine digits on held-out images
          type: superclass
          groups: [[0, 6, 8, 9], [1, 4, 7], [2, 3, 5]]   # coarse class = index of the group
          test_fraction: 0.5      #   held-out fraction of the images (stratified by digit)
      # cub/cars196/sop: one protocol "zero_shot" = PML's split="train" vs split="test"
    model:
      name: digits_mlp            # digits_mlp | resnet50 | bninception_like | tiny
      embedding_size: 64          # 512 in the image presets
      hidden: 256                 # digits_mlp only
      weights: null               # image backbones: path to local weights, never downloaded
    training:
      epochs: 10
      batch_size: 64
      m_per_class: 8              # samplers.MPerClassSampler(m=...)
      lr_trunk: 1.0e-3            # Adam learning rates (trunk / embedder / loss parameters)
      lr_embedder: 1.0e-3
      lr_loss: 1.0e-2             # proxies etc.; used only when the loss has parameters
      weight_decay: 0.0
      amp: false                  # torch.autocast: float16 on CUDA, bfloat16 on CPU
      num_workers: 0
    evaluation:
      batch_size: 256
      metrics: [precision_at_1, r_precision, mean_average_precision_at_r, NMI]
    methods:                      # the grid; each entry is one row of the table
      - name: contrastive         # row name (CLI --methods selects by name)
        loss:                     # a class spec: {class: Name, args: {...}}
          class: ContrastiveLoss
          args:
            pos_margin: 0.0
            neg_margin: 0.5
            embedding_regularizer: {class: CodingRateRegularizer, args: {eps_sq: 0.5}}
            embedding_reg_weight: 0.1
        miner: null               # optional class spec
      - name: no_learning         # special: raw inputs, L2-normalised, no training
        no_learning: true

Class specs: ``class`` is a bare name, looked up in this order in ``pml_anticollapse.<kind>``,
then ``pytorch_metric_learning.<kind>`` for kind in losses, miners, regularizers, reducers,
distances; or a full dotted path (``pml_anticollapse.miners.EasyPositiveMiner``). Any dict with a
``class`` key inside ``args`` is built first (nested regularizers, distances, reducers, the wrapped
loss of ``AntiCollapseLoss``). ``num_classes`` and ``embedding_size`` are filled in for classes
whose constructor takes them when the spec does not give them (proxy losses, ``MCR2Loss``).
A class that cannot be imported makes its method skipped with a message, not the run fail.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
from typing import Any

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "default.yaml")
DATASETS = ("digits", "cub", "cars196", "sop")

DEFAULTS: dict[str, Any] = {
    "name": "digits-default",
    "seeds": [0, 1, 2],
    "device": "auto",
    "threads": None,
    "dataset": {
        "name": "digits",
        "root": None,
        "image_size": 224,
        "split_seed": 0,
        "augment_shift": 0,
        "protocols": {
            "zero_shot": {
                "type": "zero_shot",
                "train_classes": [0, 1, 2, 3, 4],
                "test_classes": [5, 6, 7, 8, 9],
            },
        },
    },
    "model": {"name": "digits_mlp", "embedding_size": 64, "hidden": 256, "weights": None},
    "training": {
        "epochs": 10,
        "batch_size": 64,
        "m_per_class": 8,
        "iterations_per_epoch": None,
        "lr_trunk": 1e-3,
        "lr_embedder": 1e-3,
        "lr_loss": 1e-2,
        "weight_decay": 0.0,
        "amp": False,
        "num_workers": 0,
        "log_freq": 5,
        "tensorboard": False,
    },
    "evaluation": {
        "batch_size": 256,
        "metrics": [
            "precision_at_1",
            "r_precision",
            "mean_average_precision_at_r",
            "NMI",
        ],
    },
    "methods": [],
}

# Keys that only select what to run; a run folder may be resumed with other values of these.
SELECTION_KEYS = ("seeds", "methods_selected", "device", "threads", "output")


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


def load_config(path: str | None = None, _depth: int = 0) -> dict:
    """Read a YAML config and merge it over its ``base`` (if it names one) or ``DEFAULTS``.

    ``base: default.yaml`` (a path relative to the config's folder) inherits everything of that
    config; ``dataset.protocols`` and ``methods`` given here replace the inherited ones whole. A
    config without ``base`` and without ``methods`` takes the method grid of
    ``configs/default.yaml``.
    """
    path = DEFAULT_CONFIG if path is None else path
    if _depth > 5:
        raise ValueError(f"config {path!r}: 'base' chain is too deep (a cycle?)")
    user = read_yaml(path)
    base_name = user.pop("base", None)
    if base_name is not None:
        base = load_config(
            os.path.join(os.path.dirname(os.path.abspath(path)), base_name), _depth + 1
        )
    else:
        base = copy.deepcopy(DEFAULTS)
    if "protocols" in (user.get("dataset") or {}):
        base["dataset"].pop("protocols", None)
    if user.get("methods"):
        base["methods"] = []
    cfg = deep_merge(base, user)
    if not cfg.get("methods") and os.path.abspath(path) != os.path.abspath(DEFAULT_CONFIG):
        cfg["methods"] = read_yaml(DEFAULT_CONFIG).get("methods", [])
    validate_config(cfg)
    return cfg


def _unknown_keys(node: dict, schema: dict, prefix: str) -> None:
    """Refuse keys that ``DEFAULTS`` does not have (a typo would otherwise be ignored)."""
    for key, value in node.items():
        where = f"{prefix}{key}"
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ValueError(f"unknown config key {where!r}{hint} (known: {sorted(schema)})")
        sub = schema[key]
        if isinstance(sub, dict) and key != "protocols":
            if not isinstance(value, dict):
                raise ValueError(f"{where} must be a mapping, got {value!r}")
            _unknown_keys(value, sub, where + ".")


def _expect(value: Any, where: str, kind: str) -> None:
    """Check one scalar: ``kind`` is "str", "bool", "int>0", "int>=0", "int" (+ "|None")."""
    if value is None and kind.endswith("|None"):
        return
    kind = kind.removesuffix("|None")
    if kind == "str":
        ok = isinstance(value, str) and value != ""
        what = "a non-empty string"
    elif kind == "bool":
        ok = isinstance(value, bool)
        what = "true or false"
    else:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if kind == "int>0":
            ok, what = ok and value > 0, "a positive integer"
        elif kind == "int>=0":
            ok, what = ok and value >= 0, "a non-negative integer"
        else:
            what = "an integer"
    if not ok:
        raise ValueError(f"{where} must be {what}, got {value!r}")


#: The type of every scalar key of ``DEFAULTS`` (the sections are checked by ``_unknown_keys``).
SCALAR_KINDS = {
    "name": "str",
    "device": "str|None",
    "threads": "int>0|None",
    "dataset.root": "str|None",
    "dataset.image_size": "int>0",
    "dataset.split_seed": "int",
    "dataset.augment_shift": "int>=0",
    "model.name": "str",
    "model.embedding_size": "int>0",
    "model.hidden": "int>0",
    "model.weights": "str|None",
    "training.epochs": "int>=0",
    "training.batch_size": "int>0",
    "training.m_per_class": "int>0",
    "training.iterations_per_epoch": "int>0|None",
    "training.amp": "bool",
    "training.num_workers": "int>=0",
    "training.log_freq": "int>0",
    "training.tensorboard": "bool",
    "evaluation.batch_size": "int>0",
}


def validate_config(cfg: dict) -> None:
    """Raise ``ValueError`` naming the key when the config cannot run.

    Also expands ``~`` in ``dataset.root`` and ``model.weights`` (in place): the shell does not
    expand it after ``--set key=``.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"the config must be a mapping, got {cfg!r}")
    _unknown_keys(cfg, DEFAULTS, "")
    for dotted, kind in SCALAR_KINDS.items():
        section, _, key = dotted.rpartition(".")
        node = cfg[section] if section else cfg
        _expect(node.get(key, _default(dotted)), dotted, kind)
    for section, key in (("dataset", "root"), ("model", "weights")):
        if isinstance(cfg[section].get(key), str):
            cfg[section][key] = os.path.expanduser(cfg[section][key])
    weights = cfg["model"].get("weights")
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(f"model.weights must be an existing local file, got {weights!r}")
    metrics = cfg["evaluation"].get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise ValueError(f"evaluation.metrics must be a non-empty list of names, got {metrics!r}")
    if cfg["dataset"]["name"] not in DATASETS:
        raise ValueError(f"dataset.name must be one of {DATASETS}, got {cfg['dataset']['name']!r}")
    seeds = cfg["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat, got {seeds!r}")
    t = cfg["training"]
    if t["batch_size"] % t["m_per_class"]:
        raise ValueError(
            f"training.batch_size must be a multiple of training.m_per_class, "
            f"got {t['batch_size']} and {t['m_per_class']}"
        )
    for key in ("lr_trunk", "lr_embedder", "lr_loss", "weight_decay"):
        v = t.get(key)
        if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                t[key] = v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"training.{key} must be a non-negative number, got {v!r}")
    methods = cfg["methods"]
    if not isinstance(methods, list) or not methods:
        raise ValueError("methods must be a non-empty list of method entries")
    names = []
    for m in methods:
        if not isinstance(m, dict) or "name" not in m:
            raise ValueError(f"each entry of methods must be a mapping with a 'name', got {m!r}")
        if not m.get("no_learning") and "loss" not in m:
            raise ValueError(f"method {m['name']!r} must give a 'loss' (or no_learning: true)")
        names.append(m["name"])
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    if cfg["dataset"]["name"] == "digits":
        protocols = cfg["dataset"].get("protocols") or {}
        if not isinstance(protocols, dict) or not protocols:
            raise ValueError("dataset.protocols must name at least one protocol for digits")
        for pname, p in protocols.items():
            if not isinstance(p, dict):
                raise ValueError(f"dataset.protocols.{pname} must be a mapping, got {p!r}")
            if p.get("type") not in ("zero_shot", "superclass"):
                raise ValueError(
                    f"dataset.protocols.{pname}.type must be 'zero_shot' or 'superclass', "
                    f"got {p.get('type')!r}"
                )


def _default(dotted: str) -> Any:
    node: Any = DEFAULTS
    for k in dotted.split("."):
        node = node[k]
    return node


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


def method_by_name(cfg: dict, name: str) -> dict:
    for m in cfg["methods"]:
        if m["name"] == name:
            return m
    raise ValueError(
        f"methods: no method named {name!r}; known: {[m['name'] for m in cfg['methods']]}"
    )


def identity(cfg: dict) -> dict:
    """The part of the config that fixes results: everything but the selection keys."""
    out = {k: v for k, v in cfg.items() if k not in SELECTION_KEYS}
    out["methods"] = [{k: v for k, v in m.items() if k != "description"} for m in cfg["methods"]]
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
