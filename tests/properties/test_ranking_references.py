"""RankedListLoss and EasyPositiveMiner equal their slow float64 references
(tests/reference_ranking.py: Python loops over pairs, scalar comparisons) on hypothesis-drawn
batches, hyper-parameters and galleries, at magnitudes from 1e-30 to 1e30.

Batches where a distance falls within 1e-9 of a decision boundary (α, α − m, min_pos_distance, or
a tie between two candidates) are skipped with ``assume``: there the set membership legitimately
depends on rounding, in the package and in the reference alike."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from pml_anticollapse import EasyPositiveMiner, RankedListLoss
from pml_anticollapse.functional import ranked_list_loss
from tests.properties._strategies import spread_batch
from tests.reference_ranking import (
    ref_distance_matrix,
    ref_easy_positive_triplets,
    ref_ranked_list_loss,
)

pytestmark = pytest.mark.slow  # 500 hypothesis examples per property

SCALE = st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30])
GAP = 1e-9


def _gallery(wanted, dim, g, scale):
    """A 5-row reference set with labels (or None, None), at the batch's magnitude."""
    if not wanted:
        return None, None
    ref = torch.randn(5, dim, generator=g, dtype=torch.float64) * scale
    return ref, torch.randint(0, 3, (5,), generator=g)


def _clear_of(dist, *boundaries):
    return all(abs(v - b) > GAP for row in dist for v in row for b in boundaries)


@st.composite
def rll_settings(draw):
    margin = draw(st.floats(0.05, 1.0))
    alpha = draw(st.one_of(st.none(), st.floats(margin + 0.05, 2.0)))
    return dict(
        margin=margin,
        alpha=alpha,
        Tn=draw(st.floats(0.0, 30.0)),
        Tp=draw(st.floats(0.0, 5.0)),
        lam=draw(st.floats(0.0, 2.0)),
        normalize=draw(st.booleans()),
    )


class TestRankedListLoss:
    @given(batch=spread_batch(), settings=rll_settings(), scale=SCALE, gallery=st.booleans())
    def test_equals_the_reference(self, batch, settings, scale, gallery):
        z, labels, g = batch
        x = z * scale
        r, ref_labels = _gallery(gallery, z.shape[1], g, scale)
        alpha = 1 + settings["margin"] / 2 if settings["alpha"] is None else settings["alpha"]
        dist = ref_distance_matrix(x, r, settings["normalize"])
        assume(all(math.isfinite(v) for row in dist for v in row))
        assume(_clear_of(dist, alpha, alpha - settings["margin"]))
        want = ref_ranked_list_loss(x, labels, r, ref_labels, **settings)
        assume(bool(torch.isfinite(want).all()))  # the plain-exp reference overflows first
        got = ranked_list_loss(x, labels, r, ref_labels, **settings)
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)

    @given(batch=spread_batch(dtype=torch.float32), scale=SCALE)
    def test_class_equals_the_reference(self, batch, scale):
        z, labels, _ = batch
        x = z * scale
        dist = ref_distance_matrix(x)
        assume(_clear_of(dist, 1.2, 0.8))
        want = ref_ranked_list_loss(x.double(), labels).mean()
        got = RankedListLoss()(x, labels)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def _distinct(dist, min_pos):
    # every anchor's candidates are told apart by more than GAP, and none sits on the guard
    for row in dist:
        vals = sorted(row)
        if any(b - a <= GAP for a, b in zip(vals, vals[1:], strict=False)):
            return False
        if any(abs(v - min_pos) <= GAP for v in row):
            return False
    return True


class TestEasyPositiveMiner:
    @given(batch=spread_batch(), scale=SCALE, gallery=st.booleans(),
           neg=st.sampled_from(["semihard", "hard", "all"]),
           fallback=st.sampled_from(["hard", "skip"]),
           min_pos=st.sampled_from([0.0, 1e-2, 0.5]))
    def test_equals_the_brute_force(self, batch, scale, gallery, neg, fallback, min_pos):
        z, labels, g = batch
        x = z * scale
        r, ref_labels = _gallery(gallery, z.shape[1], g, scale)
        dist = ref_distance_matrix(x, r)
        assume(_distinct([row for row in dist], min_pos) if gallery else _distinct(
            [[v for j, v in enumerate(row) if j != i] for i, row in enumerate(dist)], min_pos))
        want = ref_easy_positive_triplets(
            x, labels, r, ref_labels, neg_strategy=neg, min_pos_distance=min_pos,
            semihard_fallback=fallback,
        )
        miner = EasyPositiveMiner(neg, min_pos_distance=min_pos, semihard_fallback=fallback)
        a, p, n = miner(x, labels, r, ref_labels)
        assert set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == want
