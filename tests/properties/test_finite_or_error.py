"""For any input — NaN, ±inf, subnormal, 3e38 — every public function either returns a finite
value or raises a ValueError/TypeError that names an argument; never a torch-internal error, an
inf, or a NaN it does not document."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pml_anticollapse as P
from pml_anticollapse import functional as F
from tests.properties._strategies import any_matrix, labels_for

pytestmark = pytest.mark.slow  # 500 hypothesis examples per property

NAMES = ("z", "embeddings", "ref_emb", "eps", "eps_sq", "labels", "the distances")


def _outcome(fn, *args, **kwargs):
    """fn's result, or None when it raised a clear ValueError (other exceptions propagate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. CholeskyFallbackWarning: allowed, not an error
        try:
            return fn(*args, **kwargs)
        except ValueError as e:
            assert str(e).startswith(NAMES), f"message names no argument: {e}"
            return None


def _unit_rows(z):
    x = z.double()
    amax = x.abs().amax(1, keepdim=True)
    x = x / torch.where(amax > 0, amax, 1.0)  # then normalising squares nothing out of range
    return torch.nn.functional.normalize(x, dim=1)


def _finite(t):
    return t is None or bool(torch.isfinite(t).all())


class TestFiniteOrClearError:
    @given(z=any_matrix(), form=st.sampled_from(["neg", "exp"]), normalize=st.booleans())
    def test_coding_rate_and_regularizer(self, z, form, normalize):
        assert _finite(_outcome(F.coding_rate, z, normalize=normalize))
        assert _finite(_outcome(P.CodingRateRegularizer(form=form), z))

    @given(z=any_matrix(), data=st.data())
    def test_coding_rate_reduction(self, z, data):
        labels = data.draw(labels_for(z.shape[0]))
        out = _outcome(F.coding_rate_reduction, z, labels)
        assert out is None or all(_finite(t) for t in out)

    @given(z=any_matrix(), normalize=st.booleans())
    def test_spectral_diagnostics(self, z, normalize):
        for fn in (F.effective_rank, F.rho_spectrum, F.singular_value_spectrum):
            assert _finite(_outcome(fn, z, normalize=normalize)), fn.__name__

    @given(z=any_matrix(), data=st.data(), normalize=st.booleans())
    def test_intra_inter_ratio(self, z, data, normalize):
        labels = data.draw(labels_for(z.shape[0]))
        out = _outcome(F.intra_inter_distance_ratio, z, labels, normalize=normalize)
        if out is not None and not math.isfinite(out.item()):
            # documented: no class with two members, one class, or all class means equal
            counts = torch.bincount(labels)
            rows = _unit_rows(z) if normalize else z.double()
            means = [rows[labels == c].mean(0) for c in labels.unique()]
            assert (not bool((counts >= 2).any()) or len(means) < 2
                    or all(bool((m == means[0]).all()) for m in means))

    @given(z=any_matrix(), data=st.data(), normalize=st.booleans(),
           Tn=st.sampled_from([0.0, 10.0, 1e300]))
    def test_ranked_list_loss(self, z, data, normalize, Tn):
        labels = data.draw(labels_for(z.shape[0]))
        assert _finite(_outcome(F.ranked_list_loss, z, labels, normalize=normalize, Tn=Tn))
        assert _finite(_outcome(P.RankedListLoss(Tn=Tn), z, labels))

    @given(z=any_matrix(), data=st.data(),
           neg=st.sampled_from(["semihard", "hard", "distance_weighted", "all"]))
    def test_easy_positive_miner(self, z, data, neg):
        labels = data.draw(labels_for(z.shape[0]))
        out = _outcome(P.EasyPositiveMiner(neg, generator=torch.Generator().manual_seed(0)),
                       z, labels)
        if out is not None:
            a, p, n = out
            assert len(a) == len(p) == len(n)
            assert bool((labels[a] == labels[p]).all()) and bool((labels[a] != labels[n]).all())
            assert bool((a != p).all())

    @given(eps=st.floats(allow_nan=True, allow_infinity=True), use_sq=st.booleans())
    def test_any_eps_is_a_usable_scale_or_refused(self, eps, use_sq):
        z = torch.eye(3)
        kw = {"eps_sq" if use_sq else "eps": eps}
        try:
            P.CodingRateRegularizer(**kw)  # refused in the constructor or usable at forward
        except ValueError as e:
            assert str(e).startswith("eps_sq" if use_sq else "eps")
            return
        assert _finite(F.coding_rate(z, **kw))
