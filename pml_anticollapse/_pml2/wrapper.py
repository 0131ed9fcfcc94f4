"""Recognising PML 2.9's ``DistributedLossWrapper`` and regularizer mixins on the call stack.

:mod:`pml_anticollapse.distributed` must know, under a process group of more than one rank,
whether a loss was called by PML's ``DistributedLossWrapper`` (which has already gathered the
batch and multiplies the loss by the world size) and whether a regularizer was called as a
``weight_regularizer`` (replicated weights) or an ``embedding_regularizer``. PML passes neither
fact, so they are read off the call stack, which relies on PML 2.9 internals:

- ``DistributedLossWrapper.forward`` routes through ``forward_regular_loss`` (local
  ``ref_emb``; attribute ``efficient``) and ``forward_cross_batch``; the class is importable
  from ``pytorch_metric_learning.utils.distributed`` (PML 3 moves it to ``.distributed``);
- ``EmbeddingRegularizerMixin.embedding_regularization_loss`` and
  ``WeightRegularizerMixin.weight_regularization_loss`` call the regularizers.

Frames are matched by code object (PML's own functions), not by name, and those names are
checked before the first use: when they are missing (another PML release), or when a
``DistributedLossWrapper`` subclass calls the loss from a method of its own, a
:class:`PMLInternalsError` says so and names the fix, instead of a batch silently gathered twice.
"""

from __future__ import annotations

import inspect
from types import CodeType, FrameType
from typing import NamedTuple

__all__ = ["PMLInternalsError", "find_wrapper", "known_wrapper", "regularizer_role"]

#: How far up the call stack to look.
MAX_DEPTH = 64

_DECLARE = (
    "or say how the loss is called: wrap the call in "
    "`with pml_anticollapse.distributed.running_in(kind):` with kind \"wrapper\" "
    "(DistributedLossWrapper(efficient=False) or any wrapper that hands the loss the gathered "
    "batch and multiplies it by the world size), \"wrapper-efficient\" (the local batch as "
    "embeddings, the gathered one as ref_emb, times the world size) or \"ddp\" (no wrapper); "
    "or use distributed=\"local\""
)


class PMLInternalsError(RuntimeError):
    """The PML internals this package reads off the call stack are not what it expects.

    Raised by :func:`pml_anticollapse.distributed.check_pml_internals` and, under more than one
    rank, by the first call of a coding-rate class; the message names the fix (say how the loss
    is run with :func:`pml_anticollapse.distributed.running_in`).

    Example:
        >>> from pml_anticollapse.distributed import PMLInternalsError, check_pml_internals
        >>> try:
        ...     check_pml_internals()  # PML 2.9 has what the stack walk reads: nothing raised
        ... except PMLInternalsError as err:
        ...     print(err)
    """


class Wrapper(NamedTuple):
    """PML's wrapper class and the code objects of the two methods that call the loss."""

    cls: type
    regular: CodeType
    cross_batch: CodeType


def _pml_version() -> str:
    import pytorch_metric_learning

    return getattr(pytorch_metric_learning, "__version__", "unknown")


def _wrapper_class() -> type | None:
    try:
        from pytorch_metric_learning.utils.distributed import DistributedLossWrapper
    except ImportError:
        try:  # where PML 3 keeps it
            from pytorch_metric_learning.distributed import DistributedLossWrapper
        except ImportError:
            return None
    return DistributedLossWrapper


def _params(fn) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return ()


_cache: dict = {}


def known_wrapper() -> Wrapper:
    """PML's ``DistributedLossWrapper`` with the internals the stack walk reads, checked.

    Raises:
        PMLInternalsError: a name is missing, listing each one and the fix.
    """
    cls = _wrapper_class()
    if cls is None:
        return _fail(["DistributedLossWrapper cannot be imported from "
                      "pytorch_metric_learning.utils.distributed"])
    names = ("__init__", "forward", "forward_regular_loss", "forward_cross_batch")
    fns = tuple(getattr(cls, n, None) for n in names)
    key = (cls, *fns)
    if key in _cache:
        return _cache[key]
    init, forward, regular, cross = fns
    missing = [f"DistributedLossWrapper.{n}" for n, f in zip(names[2:], fns[2:], strict=True)
               if not inspect.isfunction(f)]
    if not missing:
        if "ref_emb" not in _params(regular):
            missing.append("the ref_emb argument of DistributedLossWrapper.forward_regular_loss")
        if "efficient" not in _params(init):
            missing.append("the efficient argument of DistributedLossWrapper")
        called = getattr(getattr(forward, "__code__", None), "co_names", ())
        for n in names[2:]:
            if n not in called:
                missing.append(f"the call of {n} in DistributedLossWrapper.forward")
    if missing:
        return _fail(missing)
    _cache.clear()  # one entry: the current class
    # both are functions here (``missing`` is empty)
    _cache[key] = Wrapper(cls, regular.__code__, cross.__code__)  # type: ignore[union-attr]
    return _cache[key]


def _fail(missing: list[str]):
    raise PMLInternalsError(
        f"pml_anticollapse cannot recognise PML's DistributedLossWrapper with "
        f"pytorch-metric-learning {_pml_version()}: missing {'; '.join(missing)}. Without it a "
        "loss under the wrapper would be taken for plain DDP, gather the batch a second time and "
        "get a wrong gradient scale. Fix: install pytorch-metric-learning 2.9 "
        "(pip install 'pytorch-metric-learning>=2.9,<3'), " + _DECLARE
    )


def find_wrapper(frame: FrameType | None) -> tuple[bool, bool] | None:
    """Look up the stack from ``frame`` for PML's wrapper calling the loss.

    Returns:
        ``(efficient, user_ref)`` — the wrapper's ``efficient`` flag (False under
        ``forward_cross_batch``) and whether the user handed it ``ref_emb`` — or ``None`` when no
        wrapper calls the loss (plain DDP).

    Raises:
        PMLInternalsError: PML's names are missing (:func:`known_wrapper`), or a
            ``DistributedLossWrapper`` (a subclass) calls the loss from a method of its own.
    """
    known = known_wrapper()
    for _ in range(MAX_DEPTH):
        if frame is None:
            break
        code = frame.f_code
        if code is known.regular or code is known.cross_batch:
            local = frame.f_locals
            efficient = code is known.regular and bool(local["self"].efficient)
            return efficient, local.get("ref_emb") is not None
        if code.co_argcount and code.co_varnames[0] == "self":
            owner = frame.f_locals.get("self")
            if isinstance(owner, known.cls):
                raise PMLInternalsError(
                    f"the loss is called by {type(owner).__qualname__}.{code.co_name}, a "
                    "DistributedLossWrapper method that is not PML's forward_regular_loss or "
                    "forward_cross_batch (a subclass that overrides them?): pml_anticollapse "
                    "cannot tell whether the batch was gathered. Fix: " + _DECLARE
                )
        frame = frame.f_back
    return None


_ROLE_METHODS = (
    ("WeightRegularizerMixin", "weight_regularization_loss", "weights"),
    ("EmbeddingRegularizerMixin", "embedding_regularization_loss", "embeddings"),
)


def _role_codes() -> dict:
    from pytorch_metric_learning.losses import mixins

    codes, missing = {}, []
    for owner, name, role in _ROLE_METHODS:
        fn = getattr(getattr(mixins, owner, None), name, None)
        if not inspect.isfunction(fn):
            missing.append(f"{owner}.{name}")
        else:
            codes[fn.__code__] = role
    if missing:
        raise PMLInternalsError(
            f"pml_anticollapse cannot tell a weight_regularizer from an embedding_regularizer "
            f"with pytorch-metric-learning {_pml_version()}: missing {'; '.join(missing)}. "
            "Without it a regularizer on replicated class weights would gather them and get a "
            "wrong gradient scale. Fix: install pytorch-metric-learning 2.9 "
            "(pip install 'pytorch-metric-learning>=2.9,<3'), or use distributed=\"local\" on "
            "an embedding_regularizer and no coding-rate weight_regularizer under torch.distributed"
        )
    return codes


def regularizer_role(frame: FrameType | None) -> str:
    """``"weights"`` when a PML loss calls the regularizer as its ``weight_regularizer``,
    ``"embeddings"`` otherwise (``embedding_regularizer``, or a direct call).

    Matched by PML's code objects first and, for a loss that overrides the method, by its name.

    Raises:
        PMLInternalsError: PML's mixins lack the two methods.
    """
    codes = _role_codes()
    names = {name: role for _, name, role in _ROLE_METHODS}
    for _ in range(MAX_DEPTH):
        if frame is None:
            break
        role = codes.get(frame.f_code) or names.get(frame.f_code.co_name)
        if role is not None:
            return role
        frame = frame.f_back
    return "embeddings"
