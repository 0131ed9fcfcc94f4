"""What is minimised for a coding rate: the two forms of the anti-collapse penalty."""

from __future__ import annotations

import torch

from ._checks import check_choice, check_positive

__all__ = ["FORMS", "rate_penalty"]

#: The values of ``form``: ``"neg"`` (−R) and ``"exp"`` (exp(−γ·R)).
FORMS = ("neg", "exp")


def rate_penalty(rate: torch.Tensor, form: str = "neg", gamma: float = 1.0) -> torch.Tensor:
    """The penalty minimised for a coding rate R: −R (``form="neg"``) or exp(−γ·R) (``"exp"``).

    Formula:

        neg: P(R) = −R                 (MCR²-style; never saturates, gradient −1 everywhere)
        exp: P(R) = exp(−γ·R)          (the official ACL code; in (0, 1], flat once γ·R is large)

    For 45 random unit proxies in 512-d, R ≈ 3.6 and exp(−R) ≈ 0.03, so the exp form gives
    little gradient once the rows are spread out; −R keeps pushing.

    Args:
        rate: a coding rate (any shape; usually a scalar from
            :func:`~pml_anticollapse.functional.coding_rate`).
        form: ``"neg"`` or ``"exp"``.
        gamma: γ > 0 of the exp form (checked for both forms).

    Returns:
        Tensor of the shape and dtype of ``rate``.

    Raises:
        ValueError / TypeError: unknown ``form``; ``gamma`` not a finite number > 0.

    Reference:
        Jiang et al., "Anti-Collapse Loss for Deep Metric Learning Based on Coding Rate Metric",
        arXiv 2407.03106 (2024) — exp(−γ·R) with γ = 1 in the official code
        (NUST-Machine-Intelligence-Laboratory/Anti-Collapse-Loss, commit ec1e0bc,
        ``criteria/antico.py``); −R as in MCR², Yu et al., arXiv 2006.08558 (2020).

    Example:
        >>> r = torch.tensor(2.0)
        >>> rate_penalty(r).item(), round(rate_penalty(r, "exp", gamma=0.5).item(), 6)
        (-2.0, 0.367879)
    """
    check_choice(form, "form", FORMS)
    gamma = check_positive(gamma, "gamma")
    return -rate if form == "neg" else torch.exp(-gamma * rate)
