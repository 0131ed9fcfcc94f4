"""The coding-rate settings shared by ``CodingRateRegularizer``, ``AntiCollapseLoss`` and
``MCR2Loss``: one frozen spec, validated once, and the one ``rate()``."""

from __future__ import annotations

import dataclasses

import torch

from . import functional as F
from .distributed import SCOPES
from .functional._checks import (
    check_choice,
    check_compute_dtype,
    check_flag,
    check_optional_flag,
    check_positive,
    resolve_check,
    resolve_eps_sq,
)
from .functional.coding_rate import VARIANTS
from .functional.penalties import FORMS, rate_penalty

__all__ = ["CodingRateSettings", "UsesCodingRate"]


@dataclasses.dataclass(frozen=True)
class CodingRateSettings:
    """How a class measures and penalises a coding rate (validated on construction).

    Fields (the constructor arguments of the classes, same names, same defaults):
        eps_sq: ε² (the official codes' ``eps``), in [1e-30, 1e30]; the classes also take the
            paper's ε as ``eps`` (see :func:`pml_anticollapse.functional.coding_rate`).
        normalize: L2-normalise the rows first.
        variant: ``"standard"`` (scale d/(m·ε²)) or ``"acl_official"`` (m/(d·ε²)).
        form, gamma: the penalty, −R or exp(−γ·R)
            (:func:`~pml_anticollapse.functional.rate_penalty`).
        check: ``None`` (validate on CPU only), ``True`` or ``False`` (see ``resolve_check``).
        distributed: ``"global"`` or ``"local"`` (:mod:`pml_anticollapse.distributed`).
        compute_dtype: ``None`` or ``torch.float64`` / ``torch.float32``: the dtype the rate is
            computed in (see :func:`~pml_anticollapse.functional.coding_rate`).

    ``MCR2Loss`` takes no ``variant``, ``form`` or ``gamma``: it keeps their defaults (standard
    scale; −ΔR is the ``"neg"`` form).
    """

    eps_sq: float = 0.5
    normalize: bool = True
    variant: str = "standard"
    form: str = "neg"
    gamma: float = 1.0
    check: bool | None = None
    distributed: str = "global"
    compute_dtype: torch.dtype | None = None

    def __post_init__(self):
        checked = dict(
            eps_sq=resolve_eps_sq(None, self.eps_sq),
            normalize=check_flag(self.normalize, "normalize"),
            variant=check_choice(self.variant, "variant", VARIANTS),
            form=check_choice(self.form, "form", FORMS),
            gamma=check_positive(self.gamma, "gamma"),
            check=check_optional_flag(self.check, "check"),
            distributed=check_choice(self.distributed, "distributed", SCOPES),
            compute_dtype=check_compute_dtype(self.compute_dtype),
        )
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # frozen: store the checked value once

    @classmethod
    def from_arguments(
        cls, eps: float | None = None, eps_sq: float | None = None, **settings
    ) -> CodingRateSettings:
        """The settings from a class's arguments: ε or ε² (at most one; default ε² = 0.5)."""
        return cls(eps_sq=resolve_eps_sq(eps, eps_sq), **settings)

    def rate(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The coding rate of the rows of ``x`` (``mask``: as ``coding_rate``), differentiable."""
        return F.coding_rate(
            x,
            eps_sq=self.eps_sq,
            normalize=self.normalize,
            variant=self.variant,
            mask=mask,
            check=resolve_check(self.check, x),
            compute_dtype=self.compute_dtype,
        )

    def penalty(self, rate: torch.Tensor) -> torch.Tensor:
        """−R or exp(−γ·R), as ``form`` says."""
        return rate_penalty(rate, self.form, self.gamma)

    def rate_reduction(
        self, z: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
    ) -> F.RateReduction:
        """ΔR = R − R_c of the labelled rows
        (:func:`~pml_anticollapse.functional.coding_rate_reduction`)."""
        return F.coding_rate_reduction(
            z,
            labels,
            eps_sq=self.eps_sq,
            normalize=self.normalize,
            num_classes=num_classes,
            check=resolve_check(self.check, z),
            compute_dtype=self.compute_dtype,
        )


def _setting(name: str) -> property:
    return property(
        lambda self: getattr(self.settings, name),
        doc=f"``settings.{name}`` (read-only: build a new object to change it).",
    )


class UsesCodingRate:
    """Mixin of the coding-rate classes: ``self.settings`` (a :class:`CodingRateSettings`), its
    fields as read-only attributes, and the one :meth:`rate`."""

    settings: CodingRateSettings
    #: the settings the class takes as arguments (shown by ``repr``)
    setting_names: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CodingRateSettings))

    eps_sq = _setting("eps_sq")
    normalize = _setting("normalize")
    variant = _setting("variant")
    form = _setting("form")
    gamma = _setting("gamma")
    check = _setting("check")
    distributed = _setting("distributed")
    compute_dtype = _setting("compute_dtype")

    def rate(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The coding rate of the rows of ``x`` with this object's settings (differentiable);
        ``mask`` (m,) bool keeps only some rows, as in ``coding_rate``."""
        return self.settings.rate(x, mask)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self.settings, k)!r}" for k in self.setting_names)
