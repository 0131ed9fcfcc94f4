"""The coding rate of the *global* batch under ``torch.distributed``.

The coding rate is a property of the whole batch: the rate of the union of the ranks' batches is
not the average of the per-rank rates, so a term computed per rank optimises a different
objective. The plugin's classes call this module to find out how the batch they were handed
relates to the global one, to fetch the global rows where needed, and to scale their term so that
DistributedDataParallel's gradient averaging (1/W over W ranks) yields the full-batch gradient.

Three ways of running, told apart without any host sync (see :func:`context`):

``"wrapper"`` — inside PML's ``DistributedLossWrapper(loss, efficient=False)``
    PML has already gathered the batch: the loss and its embedding regularizer receive all W·b
    rows (this rank's rows first, with gradient; the other ranks' rows without) and the wrapper
    multiplies the loss by W. Rank r's gradient on its rows is W·∂T/∂z_r; DDP averages to
    Σ_r ∂T/∂z_r, the full-batch gradient. Nothing is gathered again, nothing rescaled.
``"wrapper-efficient"`` — inside ``DistributedLossWrapper(loss, efficient=True)``
    The loss receives its local b rows as ``embeddings`` and PML's gathered copy as ``ref_emb``;
    an embedding regularizer sees only the local rows; the loss is still multiplied by W. Losses
    use PML's gathered copy as the global batch (as in ``"wrapper"``); a regularizer, which is
    handed no copy, gathers the rows *with* gradient (:func:`all_gather_with_grad`) and divides
    its term by W: each rank then gets Σ_s ∂T/∂z_r = W·∂T/∂z_r from the gather's backward, times
    W/W, and DDP's average is again Σ_r ∂T/∂z_r.
``"ddp"`` — plain DistributedDataParallel, no wrapper
    Every term gathers its rows with gradient; T(Z) is the same number on every rank; the
    gather's backward sums the W identical contributions, W·∂T/∂z_r, and DDP's 1/W average gives
    Σ_r ∂T/∂z_r: no extra scaling.

Replicated tensors (class proxies, weights handed to a ``weight_regularizer``) are never
gathered: every rank holds the same copy and computes the same term. Under the wrapper their
term is divided by W to undo the wrapper's ×W (:func:`replicated_scale`).

Scope ``"local"`` (the classes' ``distributed="local"``) keeps the historical per-rank term:
the rate of this rank's own b rows (sliced out of PML's gathered batch in ``"wrapper"`` mode),
scaled so the optimised objective is the mean over ranks of the per-rank terms.

Which of the three applies is read off the call stack (PML passes no such information): PML's
``DistributedLossWrapper.forward_regular_loss`` / ``forward_cross_batch`` calling the loss means
a wrapper mode, nothing means plain DDP. This relies on PML 2.9 internals, which
:mod:`pml_anticollapse._pml2.wrapper` checks before the first stack walk: with another PML
release that lacks them, or a ``DistributedLossWrapper`` subclass that calls the loss from a
method of its own, the first multi-rank call raises :class:`PMLInternalsError` naming the fix
instead of gathering the batch twice. A wrapper of your own that is not PML's class cannot be
recognised and is taken for plain DDP. Say it explicitly with :func:`running_in` — then nothing
is read off the stack::

    with running_in("ddp"):  # or "wrapper", "wrapper-efficient"
        loss = loss_fn(embeddings, labels)

Limits: with ``"global"`` under a process group of more than one rank the terms are collective —
every rank must call them, in the same order (a loss evaluated on rank 0 alone would wait for the
others forever: use ``distributed="local"`` there); every rank must hand over the same number of
rows (as PML's wrapper also requires); ``torch.compile`` graph-breaks on the stack walk (only
when a process group with more than one rank is initialised: single-process code never walks the
stack). Whether a regularizer is a ``weight_regularizer`` is also read off the stack (PML's
``weight_regularization_loss``), with the same check.

A new regularizer gets all of this with one call, :func:`regularizer_rows`::

    def compute_loss(self, x):
        x, _, scale = D.regularizer_rows(x, self.distributed)  # global rows, factor
        return {"loss": already_reduced(scale * term(x))}
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator, Sequence
from typing import NamedTuple, cast, overload

import torch
import torch.distributed as dist

from ._pml2 import wrapper as _wrapper
from ._pml2.wrapper import PMLInternalsError
from .functional._checks import check_choice, check_flag

__all__ = [
    "KINDS",
    "SCOPES",
    "Context",
    "PMLInternalsError",
    "Rows",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "check_pml_internals",
    "context",
    "global_labels",
    "global_rows",
    "regularizer_rows",
    "regularizer_target",
    "replicated_scale",
    "running_in",
]

#: The values of the classes' ``distributed=`` argument.
SCOPES = ("global", "local")
#: The ways of running under more than one rank (see the module docstring), for :func:`running_in`.
KINDS = ("wrapper", "wrapper-efficient", "ddp")


class Context(NamedTuple):
    """How the current call relates to the global batch.

    kind: ``"single"`` (no process group or one rank), ``"wrapper"``, ``"wrapper-efficient"``
    or ``"ddp"``; world_size: W; user_ref: the user handed ``ref_emb`` to the wrapper (so the
    ``ref_emb`` the loss receives is the gathered user reference set, not the gathered batch).

    Example:
        >>> from pml_anticollapse.distributed import context
        >>> context()  # one process: nothing to gather
        Context(kind='single', world_size=1, user_ref=False)
    """

    kind: str
    world_size: int
    user_ref: bool = False


SINGLE = Context("single", 1, False)


class Rows(NamedTuple):
    """The rows whose rate a term measures, their labels, and the factor for the term.

    Example:
        >>> import torch
        >>> from pml_anticollapse.distributed import regularizer_rows
        >>> rows = regularizer_rows(torch.eye(2), "global")  # one process: the rows themselves
        >>> rows.x.shape, rows.labels, rows.scale
        (torch.Size([2, 2]), None, 1.0)
    """

    x: torch.Tensor
    labels: torch.Tensor | None
    scale: float


_declared: contextvars.ContextVar[tuple[str, bool] | None] = contextvars.ContextVar(
    "pml_anticollapse_distributed_kind", default=None
)


@contextlib.contextmanager
def running_in(kind: str, *, user_ref: bool = False) -> Iterator[None]:
    """Say how the losses and regularizers called inside the block are run, instead of reading it
    off the call stack.

    Args:
        kind: ``"wrapper"`` — the loss is handed the gathered global batch (this rank's rows
            first, with gradient) and its result is multiplied by the world size, as PML's
            ``DistributedLossWrapper(efficient=False)`` does; ``"wrapper-efficient"`` — the local
            rows as ``embeddings`` and the gathered batch as ``ref_emb``, result times the world
            size (``DistributedLossWrapper(efficient=True)``); ``"ddp"`` — the loss is handed this
            rank's rows only and nothing multiplies it (no wrapper).
        user_ref: with ``"wrapper-efficient"``: the ``ref_emb`` the loss receives is a reference
            set of the user's (gathered), not the gathered batch.

    Use it for a wrapper of your own, or with a PML release whose internals
    :func:`check_pml_internals` refuses. Under one process (or no process group) it changes
    nothing. Also usable as a decorator.

    Example:
        >>> with running_in("ddp"):
        ...     context()  # no process group in a doctest: still a single process
        Context(kind='single', world_size=1, user_ref=False)
    """
    token = _declared.set((check_choice(kind, "kind", KINDS), check_flag(user_ref, "user_ref")))
    try:
        yield
    finally:
        _declared.reset(token)


def check_pml_internals() -> None:
    """Check the PML internals that recognising ``DistributedLossWrapper`` relies on.

    Called before the first stack walk anyway; call it yourself at start-up to fail before
    training. Raises :class:`PMLInternalsError` naming what is missing and the fix.
    """
    _wrapper.known_wrapper()
    _wrapper.regularizer_role(None)


def context() -> Context:
    """Tell which of the modes of this module's docstring the caller runs in.

    Single-process (no initialised process group, or one rank): ``Context("single", 1)``
    without looking further. Otherwise the kind declared with :func:`running_in`, or else the
    Python call stack is searched for PML's ``DistributedLossWrapper`` (its ``efficient`` flag
    and whether the user handed it ``ref_emb``); no collective and no host sync.

    Raises:
        PMLInternalsError: PML's wrapper is not what the stack walk expects (see
            :func:`check_pml_internals`) and no kind was declared.

    Example:
        >>> context()  # no process group in a doctest
        Context(kind='single', world_size=1, user_ref=False)
    """
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    world_size = dist.get_world_size()
    if world_size == 1:
        return SINGLE
    declared = _declared.get()
    if declared is not None:
        return Context(declared[0], world_size, declared[0] == "wrapper-efficient" and declared[1])
    found = _wrapper.find_wrapper(sys._getframe(1))
    if found is None:
        return Context("ddp", world_size, False)
    efficient, user_ref = found
    return Context("wrapper-efficient" if efficient else "wrapper", world_size, user_ref)


def regularizer_target() -> str:
    """``"weights"`` when a PML loss calls the regularizer as its ``weight_regularizer``,
    ``"embeddings"`` otherwise (``embedding_regularizer``, or a direct call).

    Found from the caller's frames (PML 2.9's ``weight_regularization_loss``); called only when a
    process group with more than one rank is up.
    """
    return _wrapper.regularizer_role(sys._getframe(1))


def regularizer_rows(x: torch.Tensor, scope: str) -> Rows:
    """What a regularizer's term measures, in one call: ``Rows(x, None, scale)``.

    One process: ``x`` itself, scale 1. Under more than one rank: for a ``weight_regularizer``
    (replicated weights) ``x`` with :func:`replicated_scale`; otherwise the rows of
    :func:`global_rows` for ``scope`` (gathered with gradient where no wrapper gathered them).
    Multiply the term by ``scale``.
    """
    ctx = context()
    if ctx.kind == "single":
        check_choice(scope, "distributed", SCOPES)
        return Rows(x, None, 1.0)
    if regularizer_target() == "weights":
        return Rows(x, None, replicated_scale(ctx))
    return global_rows([(x, None)], scope, ctx)


class _AllGatherWithGrad(torch.autograd.Function):
    """cat over ranks of x; the backward sums every rank's gradient for this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = slice(dist.get_rank() * x.shape[0], (dist.get_rank() + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # all_reduce rather than reduce_scatter: gloo has no reduce_scatter.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rows]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n, …) over the ranks, in rank order, keeping the autograd graph.

    The backward pass sums, over all ranks, the gradient each rank computed for this rank's
    rows (an ``all_reduce``), which is what makes a term computed identically on every rank
    yield W times its gradient before DDP's 1/W average. Every rank must pass the same shape.

    Args:
        x: (n, …) tensor, the same shape on every rank.

    Returns:
        (W·n, …) tensor.
    """
    return _AllGatherWithGrad.apply(x)


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over the ranks in rank order, without gradient (labels)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _check_scope(scope: str) -> None:
    check_choice(scope, "distributed", SCOPES)


@overload
def _own_rows(t: torch.Tensor, world_size: int) -> torch.Tensor: ...
@overload
def _own_rows(t: None, world_size: int) -> None: ...
def _own_rows(t: torch.Tensor | None, world_size: int) -> torch.Tensor | None:
    # PML's gather puts this rank's rows first: cat([local, other ranks]).
    return None if t is None else t[: t.shape[0] // world_size]


def global_rows(
    parts: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    scope: str,
    ctx: Context,
    gathered: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> Rows:
    """The rows (and labels) whose rate a term measures, and the factor for the term.

    Args:
        parts: the ``(rows, labels or None)`` sets this rank was handed whose union is measured
            (the batch, and for ``MCR2Loss`` a reference set); labels either all None or all
            given.
        scope: ``"global"`` or ``"local"``.
        ctx: from :func:`context`.
        gathered: in ``"wrapper-efficient"`` mode, the ``(ref_emb, ref_labels)`` the loss was
            handed, which is PML's gathered copy of ``parts[0]`` unless the user gave the wrapper
            its own ``ref_emb``; used instead of gathering again. ``None`` for a regularizer.

    Returns:
        ``Rows(x, labels, scale)``: multiply the term by ``scale`` so that the gradient after
        DDP's averaging is the full-batch one (``"global"``) or the mean of the per-rank ones
        (``"local"``).

    Raises:
        ValueError: unknown ``scope``.
    """
    _check_scope(scope)
    w = ctx.world_size
    if ctx.kind == "wrapper" and scope == "local":
        parts = [(_own_rows(x, w), _own_rows(y, w)) for x, y in parts]
    elif ctx.kind == "wrapper-efficient" and scope == "global":
        if gathered is not None and not ctx.user_ref:
            return Rows(gathered[0], gathered[1], 1.0)
        parts = [(all_gather_with_grad(x), None if y is None else all_gather_no_grad(y))
                 for x, y in parts]
    elif ctx.kind == "ddp" and scope == "global":
        parts = [(all_gather_with_grad(x), None if y is None else all_gather_no_grad(y))
                 for x, y in parts]
    x = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
    labels = None
    if parts[0][1] is not None:
        # every part has labels when the first has (the callers pass them for all or none)
        labels = parts[0][1] if len(parts) == 1 else torch.cat(
            [cast(torch.Tensor, p[1]) for p in parts]
        )
    if ctx.kind == "wrapper-efficient" and scope == "global":
        scale = 1.0 / w  # gathered with gradient, and the wrapper multiplies by W
    elif ctx.kind.startswith("wrapper") and scope == "local":
        scale = 1.0 / w  # undo the wrapper's ×W: mean of the per-rank terms
    else:
        scale = 1.0
    return Rows(x, labels, scale)


def global_labels(
    labels: torch.Tensor, scope: str, ctx: Context, gathered: torch.Tensor | None = None
) -> torch.Tensor:
    """The labels of the batch a term should see (global or this rank's), without gradient.

    Args:
        labels: the labels this rank was handed.
        scope, ctx: as :func:`global_rows`.
        gathered: the ``ref_labels`` handed to the loss (PML's gathered copy in
            ``"wrapper-efficient"`` mode unless the user gave the wrapper ``ref_labels``).
    """
    _check_scope(scope)
    if ctx.kind == "wrapper" and scope == "local":
        return _own_rows(labels, ctx.world_size)
    if ctx.kind == "wrapper-efficient" and scope == "global":
        if gathered is not None and not ctx.user_ref:
            return gathered
        return all_gather_no_grad(labels)
    if ctx.kind == "ddp" and scope == "global":
        return all_gather_no_grad(labels)
    return labels


def replicated_scale(ctx: Context) -> float:
    """Factor for a term on replicated tensors (proxies): 1/W under PML's wrapper, whose ×W
    would otherwise make DDP's average W times the gradient; 1 otherwise."""
    return 1.0 / ctx.world_size if ctx.kind.startswith("wrapper") else 1.0
