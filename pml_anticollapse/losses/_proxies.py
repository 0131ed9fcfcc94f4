"""Reading a PML proxy loss's class proxies as rows, whatever its storage layout."""

from __future__ import annotations

import torch

# attribute, stored as (num_proxies, dim) rows?  — in the order PML 2.9 uses them.
_LAYOUTS = (
    ("proxies", True),  # ProxyAnchorLoss, ProxyNCALoss
    ("W", False),  # NormalizedSoftmaxLoss, LargeMarginSoftmaxLoss, ArcFace, CosFace, SphereFace,
    #               SubCenterArcFace: (dim, num_classes·sub_centers)
    ("fc", False),  # SoftTripleLoss: (dim, num_classes·centers_per_class)
)


def proxies_of(loss: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(P, proxy_class)``: the proxies as (num_proxies, dim) rows and each one's class.

    Multi-centre losses (SoftTriple, SubCenterArcFace) store the k centres of class c in
    columns c·k … c·k + k − 1, so a proxy's class is its index // k.

    Raises:
        TypeError: ``loss`` has no proxies this function knows about.
    """
    for attr, as_rows in _LAYOUTS:
        weight = getattr(loss, attr, None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:
            proxies = weight if as_rows else weight.t()
            per_class = getattr(loss, "sub_centers", None) or getattr(
                loss, "centers_per_class", None
            ) or 1
            proxy_class = torch.arange(proxies.shape[0], device=proxies.device) // per_class
            return proxies, proxy_class
    raise TypeError(
        f"loss must be a PML proxy loss (with a 'proxies', 'W' or 'fc' parameter) to regularise "
        f"proxies, got {type(loss).__name__}"
    )
