"""Slow float64 oracles for the ranking methods, written straight from the papers with Python loops
over queries and pairs (a different algorithm from the package: explicit differences and norms
per pair instead of a Gram matrix, plain exp instead of max-subtracted softmax, scalar
comparisons instead of masks)."""

from __future__ import annotations

import math

import torch


def _unit(z: torch.Tensor, normalize: bool) -> list[torch.Tensor]:
    rows = [r.to(torch.float64) for r in z]
    if normalize:
        rows = [r / torch.linalg.vector_norm(r) for r in rows]
    return rows


def ref_ranked_list_loss(
    z,
    labels,
    ref=None,
    ref_labels=None,
    *,
    margin=0.4,
    alpha=None,
    Tn=10.0,
    Tp=0.0,
    lam=1.0,
    normalize=True,
    detach_weights=True,
    query_grad_only=False,
):
    """Per-query RLL (CVPR 2019 eq. for L_P, L_N; T_p weighting from TPAMI) as a float64 tensor
    that autograd can differentiate (pass z with requires_grad)."""
    alpha = 1.0 + margin / 2.0 if alpha is None else alpha
    self_ref = ref is None
    x = _unit(z, normalize)
    if self_ref:
        y, ref_labels = x, labels
    else:
        y = _unit(ref, normalize)
    if query_grad_only:
        y = [r.detach() for r in y]
    labels, ref_labels = labels.tolist(), ref_labels.tolist()
    out = []
    for i in range(len(x)):
        pos, neg = [], []
        for j in range(len(y)):
            if self_ref and j == i:
                continue
            d = torch.linalg.vector_norm(x[i] - y[j])  # subgradient 0 at d = 0
            dv = float(d.detach())
            if labels[i] == ref_labels[j]:
                if dv > alpha - margin:
                    pos.append(d)
            elif dv < alpha:
                neg.append(d)
        li = torch.zeros((), dtype=torch.float64)
        if pos:
            w = [torch.exp(Tp * (d - (alpha - margin))) for d in pos]
            if detach_weights:
                w = [v.detach() for v in w]
            terms = (wk * (d - (alpha - margin)) for wk, d in zip(w, pos, strict=True))
            li = li + sum(terms) / sum(w)
        if neg:
            w = [torch.exp(Tn * (alpha - d)) for d in neg]
            if detach_weights:
                w = [v.detach() for v in w]
            li = li + lam * sum(wk * (alpha - d) for wk, d in zip(w, neg, strict=True)) / sum(w)
        out.append(li)
    return torch.stack(out)


def _dist(a, b) -> float:
    return math.sqrt(sum((float(u) - float(v)) ** 2 for u, v in zip(a, b, strict=True)))


def ref_distance_matrix(z, ref=None, normalize=True):
    """Euclidean distances of (optionally L2-normalised) rows, pair by pair, as nested lists."""
    x = [[float(v) for v in r] for r in _unit(z.detach(), normalize)]
    y = x if ref is None else [[float(v) for v in r] for r in _unit(ref.detach(), normalize)]
    return [[_dist(a, b) for b in y] for a in x]


def ref_easy_positive_choices(
    z,
    labels,
    ref=None,
    ref_labels=None,
    *,
    min_pos_distance=1e-2,
    normalize=True,
):
    """Per anchor: (positive index or None, [(negative index, distance)], d_ap).

    The positive is the nearest same-class reference sample (not the anchor itself when the
    reference set is the batch) at distance > min_pos_distance (Levi et al., ICCV 2021)."""
    self_ref = ref is None
    d = ref_distance_matrix(z, ref, normalize)
    labels = labels.tolist()
    ref_labels = labels if self_ref else ref_labels.tolist()
    out = []
    for i, row in enumerate(d):
        best, best_d = None, math.inf
        negs = []
        for j, dij in enumerate(row):
            if self_ref and i == j:
                continue
            if labels[i] == ref_labels[j]:
                if dij > min_pos_distance and dij < best_d:
                    best, best_d = j, dij
            else:
                negs.append((j, dij))
        out.append((best, negs, best_d))
    return out


def ref_easy_positive_triplets(
    z, labels, ref=None, ref_labels=None, *, neg_strategy, min_pos_distance=1e-2,
    semihard_fallback="hard", normalize=True,
):
    """Brute-force triplet set for the deterministic negative strategies."""
    triplets = set()
    for a, (p, negs, dap) in enumerate(
        ref_easy_positive_choices(
            z, labels, ref, ref_labels, min_pos_distance=min_pos_distance, normalize=normalize
        )
    ):
        if p is None or not negs:
            continue
        if neg_strategy == "all":
            triplets.update((a, p, n) for n, _ in negs)
            continue
        hardest = min(negs, key=lambda t: t[1])[0]
        if neg_strategy == "hard":
            triplets.add((a, p, hardest))
        elif neg_strategy == "semihard":
            farther = [t for t in negs if t[1] > dap]
            if farther:
                triplets.add((a, p, min(farther, key=lambda t: t[1])[0]))
            elif semihard_fallback == "hard":
                triplets.add((a, p, hardest))
        else:
            raise ValueError(neg_strategy)
    return triplets


def ref_distance_weighted_probs(d_row, dim, cutoff=0.5, nonzero_loss_cutoff=1.4):
    """Wu et al. (2017): P(n) ∝ 1/q(max(d, cutoff)) for d < nonzero_loss_cutoff, with
    q(d) = d^(dim−2)·(1 − d²/4)^((dim−3)/2); uniform if no negative is that close.
    d_row: [(index, distance)]. Returns {index: probability}."""
    w = {}
    for j, dj in d_row:
        if dj < nonzero_loss_cutoff:
            dc = max(dj, cutoff)
            q = dc ** (dim - 2) * (1.0 - dc * dc / 4.0) ** ((dim - 3) / 2.0)
            w[j] = 1.0 / q
    if not w:
        return {j: 1.0 / len(d_row) for j, _ in d_row}
    total = sum(w.values())
    return {j: v / total for j, v in w.items()}
