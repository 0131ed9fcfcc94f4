"""Equal-budget hyperparameter search on validation folds of the training classes.

The protocol of Musgrave, Belongie and Lim, "A Metric Learning Reality Check" (ECCV 2020, arXiv
2003.08505): every method gets the same number of trials; a trial's objective is the mean
MAP@R over K class-disjoint validation folds carved from the *training* classes (the test
classes and test fonts are never touched); the best settings are then trained on all training
classes over the seeds and tested once.

A method declares its space in its YAML entry::

    - name: triplet+coding_rate
      loss: {...}
      search:
        training.lr_trunk: {loguniform: [1.0e-4, 3.0e-3]}
        loss.args.embedding_reg_weight: {loguniform: [0.01, 1.0]}

Keys starting with ``loss.`` or ``miner.`` are paths inside the method; every other key is a
path of the run's config (``training.*``, ``model.*``). Distributions: ``uniform: [lo, hi]``,
``loguniform: [lo, hi]`` (lo > 0), ``int: [lo, hi]`` (inclusive), ``categorical: [a, b, ...]``.

Search: Optuna's TPE sampler (Bergstra et al., NeurIPS 2011), its study in the run folder
(SQLite). The sampler is re-created for each trial with the seed ``hash(seed, method, trial
index)``, and trials run one after another, so trial n depends only on trials 0..n-1: a
search killed at any point and restarted with the same command asks the same trials. A trial
left RUNNING by a killed process is finished on restart with its stored parameters (its folds
that finished are read back from their result files), so no trial is lost or repeated. TPE
draws its first 10 trials at random (Optuna's ``n_startup_trials``): a budget of ≤ 10 trials is
a seeded random search.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DISTRIBUTIONS = ("uniform", "loguniform", "int", "categorical")
METHOD_KEYS = ("loss", "miner")


class SearchSpaceError(ValueError):
    """A method's ``search`` entry is malformed (named key, what was expected, what arrived)."""


@dataclass(frozen=True)
class Param:
    """One searched setting: a dotted ``key`` and its distribution."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()

    def distribution(self):
        import optuna.distributions as od

        if self.kind == "uniform":
            return od.FloatDistribution(self.low, self.high)
        if self.kind == "loguniform":
            return od.FloatDistribution(self.low, self.high, log=True)
        if self.kind == "int":
            return od.IntDistribution(self.low, self.high)
        return od.CategoricalDistribution(self.choices)

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.key} ∈ {list(self.choices)}"
        return f"{self.key} ~ {self.kind}[{self.low:g}, {self.high:g}]"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_space(method: dict, key_exists: Callable[[str], bool]) -> list[Param]:
    """The validated search space of ``method`` (``[]`` when it declares none).

    ``key_exists(key)`` tells whether a config key (``training.lr_trunk``) exists; method keys
    (``loss.args.margin``) must exist in the method entry itself, so that a typo is an error
    rather than a setting nobody reads.
    """
    name = method.get("name", "?")
    space = method.get("search")
    if space is None:
        return []
    where = f"method {name!r}: search"
    if not isinstance(space, dict):
        raise SearchSpaceError(f"{where} must be a mapping of key -> distribution, got {space!r}")
    params = []
    for key, spec in space.items():
        at = f"{where}.{key}"
        if not isinstance(key, str) or not key:
            raise SearchSpaceError(f"{where}: keys must be dotted config paths, got {key!r}")
        head = key.split(".", 1)[0]
        if head in METHOD_KEYS:
            if not has_path(method, key):
                raise SearchSpaceError(
                    f"{at}: unknown key: the method has no {key!r} (give its current value in "
                    "the method entry first, so the search changes a setting that is used)"
                )
        elif not key_exists(key):
            raise SearchSpaceError(f"{at}: unknown key {key!r} (not a config setting)")
        if not isinstance(spec, dict) or len(spec) != 1:
            raise SearchSpaceError(
                f"{at} must be one distribution such as {{loguniform: [1.0e-4, 1.0e-2]}}, "
                f"got {spec!r}"
            )
        (kind, args), = spec.items()
        if kind not in DISTRIBUTIONS:
            raise SearchSpaceError(
                f"{at}: unknown distribution {kind!r}; expected one of {', '.join(DISTRIBUTIONS)}"
            )
        if kind == "categorical":
            if not isinstance(args, list) or not args:
                raise SearchSpaceError(f"{at}: categorical needs a non-empty list, got {args!r}")
            params.append(Param(key, kind, choices=tuple(args)))
            continue
        if not isinstance(args, list) or len(args) != 2 or not all(_is_number(a) for a in args):
            raise SearchSpaceError(f"{at}: {kind} needs [lower, upper] numbers, got {args!r}")
        low, high = args
        if low > high:
            raise SearchSpaceError(f"{at}: lower {low!r} > upper {high!r}")
        if kind == "loguniform" and low <= 0:
            raise SearchSpaceError(f"{at}: loguniform needs lower > 0, got {low!r}")
        if kind == "int":
            if not all(isinstance(a, int) for a in args):
                raise SearchSpaceError(f"{at}: int needs integer bounds, got {args!r}")
        else:
            low, high = float(low), float(high)
        params.append(Param(key, kind, low, high))
    return params


def has_path(tree: Any, key: str) -> bool:
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _set_path(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def apply_params(cfg: dict, method: dict, params: dict[str, Any]) -> tuple[dict, dict]:
    """Copies of ``cfg`` and ``method`` with the searched values set (neither input changes)."""
    cfg, method = copy.deepcopy(cfg), copy.deepcopy(method)
    for key, value in params.items():
        target = method if key.split(".", 1)[0] in METHOD_KEYS else cfg
        _set_path(target, key, value)
    return cfg, method


def class_folds(labels: Sequence[int], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """K class-disjoint folds of the classes in ``labels``: [(fit classes, validation classes)].

    Within every fold the fit and validation classes are disjoint, and only classes present in
    ``labels`` (the training classes) appear, so a fold can never see a test class. With at
    least 2k classes they are shuffled with ``seed`` and dealt into k groups of (nearly) equal
    size, fold i validating on group i (each class validated once). With fewer (digits: 5
    training classes) each fold validates on a different seeded pair of classes and fits on
    the rest, so the validation sets of two folds may share a class.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise ValueError(f"tuning folds must be an integer >= 2, got {k!r}")
    classes = np.unique(np.asarray(labels))
    n = len(classes)
    rng = np.random.RandomState(seed)
    if n >= 2 * k:
        groups = np.array_split(rng.permutation(classes), k)
        vals = [sorted(int(c) for c in g) for g in groups]
    else:
        pairs = [(int(a), int(b)) for i, a in enumerate(classes) for b in classes[i + 1 :]]
        if n < 4 or len(pairs) < k:
            raise ValueError(
                f"{k} tuning folds need at least 4 training classes and {k} distinct validation "
                f"pairs, got {n} classes"
            )
        vals = [list(pairs[i]) for i in sorted(rng.choice(len(pairs), size=k, replace=False))]
    return [(sorted(int(c) for c in classes if int(c) not in v), v) for v in vals]


def trial_seed(seed: int, method: str, number: int) -> int:
    """The sampler seed of trial ``number`` of ``method`` (stable across processes)."""
    digest = hashlib.sha256(f"{seed}/{method}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def open_storage(url: str):
    """The Optuna storage at ``url``: ``journal:PATH`` is an Optuna journal file (appends under
    a file lock; fine on a local disk shared by the ranks of one machine), anything else an
    Optuna RDB URL (``sqlite:///path``, ``postgresql://user@host/db``, ``mysql://...``: a
    database server serves ranks on machines that share no reliable file locking). SQLite waits
    up to 60 s for a lock that another rank holds."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal:"):]
        if not path:
            raise ValueError("--storage journal:PATH needs a file path")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    if "://" not in url:
        raise ValueError(
            f"--storage must be an Optuna RDB URL (sqlite:///path, postgresql://...) or "
            f"journal:PATH, got {url!r}"
        )
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except ImportError as e:  # e.g. no psycopg2 for postgresql://
        raise ValueError(f"--storage {url!r}: {e}") from e


def completed_trials(study) -> list:
    """The study's finished trials in the order they ran (a trial's index in this list is the
    number the search, its records and its folders use)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.number)


def run_search(
    storage,
    method_name: str,
    space: list[Param],
    n_trials: int,
    seed: int,
    objective: Callable[[int, dict[str, Any]], float],
) -> Any:
    """Run (or finish) ``n_trials`` trials of ``method_name``'s study; return the study.

    ``objective(index, params)`` returns the value to maximise (mean validation MAP@R); ``index``
    counts the finished trials before this one. A trial left RUNNING by a killed process is
    finished first with its stored parameters; one killed inside ``study.ask`` (before all its
    parameters were stored) is marked FAIL — TPE ignores failed trials, and the sampler of trial
    ``index`` is seeded by ``index``, so the same trial is asked again.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=method_name, storage=storage, direction="maximize", load_if_exists=True
    )
    dists = {p.key: p.distribution() for p in space}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if set(t.params) != set(dists):
            study.tell(t.number, state=TrialState.FAIL)
            continue
        value = objective(len(completed_trials(study)), dict(t.params))
        study.tell(t.number, value)
    while (index := len(completed_trials(study))) < n_trials:
        study.sampler = optuna.samplers.TPESampler(seed=trial_seed(seed, method_name, index))
        trial = study.ask(dists)
        value = objective(index, dict(trial.params))
        study.tell(trial, value)
    return study


def best_so_far(values: Sequence[float]) -> list[float]:
    """The running maximum of ``values`` (NaN-safe: a failed trial does not lower it)."""
    out, best = [], -math.inf
    for v in values:
        if v is not None and not math.isnan(v):
            best = max(best, v)
        out.append(best if best > -math.inf else math.nan)
    return out


def plot_best_so_far(curves: dict[str, list[float]], path: str, title: str) -> None:
    """One line per method: the best mean validation MAP@R after each trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, values in sorted(curves.items()):
        ax.plot(range(1, len(values) + 1), best_so_far(values), label=name, lw=1.5)
    ax.set_xlabel("trial")
    ax.set_ylabel("best mean validation MAP@R so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    from .._shared import save_figure

    save_figure(fig, path)
    plt.close(fig)
