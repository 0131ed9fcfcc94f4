"""RankedListLoss against the float64 loop reference of the CVPR 2019 / TPAMI formula, side by
side with PML 2.9's RankedListLoss where PML departs from the formula."""

from __future__ import annotations

import warnings

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

from pml_anticollapse import RankedListLoss
from pml_anticollapse.functional import ranked_list_loss
from tests.reference_ranking import ref_distance_matrix, ref_ranked_list_loss

SETTINGS = [
    dict(),  # RLL-Simpler, m = 0.4, α = 1.2, T_n = 10
    dict(margin=0.2, alpha=1.4, Tn=10.0),  # the paper's CUB setting
    dict(margin=0.4, alpha=1.2, Tn=2.0, Tp=3.0, lam=0.5),  # TPAMI positive weighting
    dict(margin=0.3, Tn=0.0, lam=2.0),  # unweighted negatives
]


def _batch(n_classes=6, per_class=4, dim=16, dtype=torch.float64, seed=0):
    # class centres plus noise, so that pairs fall on both sides of every boundary
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    centres = torch.randn(n_classes, dim, generator=g, dtype=torch.float64)
    z = centres[labels] + 1.0 * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return z.to(dtype), labels


def _pml(margin=0.4, Tn=10.0, imbalance=0.5, alpha=None, Tp=0.0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PML warns about T > 5
        return pml_losses.RankedListLoss(margin, Tn, imbalance=imbalance, alpha=alpha, Tp=Tp)


def _grad(fn, z):
    z = z.detach().clone().requires_grad_(True)
    fn(z).sum().backward()
    return z.grad


class TestAgainstReference:
    @pytest.mark.parametrize("setting", SETTINGS)
    def test_values_random_batches(self, setting, dtype, tol):
        z, labels = _batch(dtype=dtype)
        ours = RankedListLoss(**setting)(z, labels)
        ref = ref_ranked_list_loss(z, labels, **setting).mean()
        torch.testing.assert_close(ours.double(), ref, **tol)

    @pytest.mark.parametrize("setting", SETTINGS)
    @pytest.mark.parametrize("shape", [(6, 4, 16), (4, 3, 8)], ids=["values", "gradients"])
    def test_batches_exercise_both_sides_of_each_boundary(self, setting, shape):
        # the batches of the value and gradient tests must have pairs in and out of P* and N*
        # for every setting, or those tests are weak
        z, labels = _batch(*shape)
        margin = setting.get("margin", 0.4)
        alpha = setting.get("alpha") or 1.0 + margin / 2.0
        d = torch.tensor(ref_distance_matrix(z))
        same = labels[:, None] == labels[None]
        off = ~torch.eye(len(labels), dtype=torch.bool)
        pos_d, neg_d = d[same & off], d[~same]
        assert (pos_d > alpha - margin).any() and (pos_d <= alpha - margin).any()
        assert (neg_d < alpha).any() and (neg_d >= alpha).any()

    @pytest.mark.parametrize("setting", SETTINGS)
    @pytest.mark.parametrize("detach_weights", [True, False])
    @pytest.mark.parametrize("query_grad_only", [False, True])
    def test_gradients(self, setting, detach_weights, query_grad_only):
        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        kw = dict(setting, detach_weights=detach_weights, query_grad_only=query_grad_only)
        ours = _grad(lambda x: RankedListLoss(**kw)(x, labels), z)
        ref = _grad(lambda x: ref_ranked_list_loss(x, labels, **kw).mean(), z)
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)

    def test_detached_weights_change_the_gradient_not_the_value(self):
        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        a, b = RankedListLoss(detach_weights=True), RankedListLoss(detach_weights=False)
        torch.testing.assert_close(a(z, labels), b(z, labels))
        ga, gb = _grad(lambda x: a(x, labels), z), _grad(lambda x: b(x, labels), z)
        assert not torch.allclose(ga, gb)

    def test_gradcheck_full_gradient(self):
        z, labels = _batch(n_classes=3, per_class=3, dim=5)
        loss = RankedListLoss(Tn=3.0, Tp=2.0, detach_weights=False)
        assert torch.autograd.gradcheck(
            lambda x: loss(x, labels), (z.requires_grad_(True),), eps=1e-6, atol=1e-7
        )

    def test_ref_emb(self):
        z, labels = _batch(n_classes=4, per_class=3, dim=8, seed=1)
        ref, ref_labels = _batch(n_classes=5, per_class=4, dim=8, seed=2)
        for kw in (dict(), dict(Tp=2.0, detach_weights=False)):
            loss = RankedListLoss(**kw)
            ours = _grad(lambda x, f=loss: f(x, labels, ref_emb=ref, ref_labels=ref_labels), z)
            want = _grad(
                lambda x, kw=kw: ref_ranked_list_loss(x, labels, ref, ref_labels, **kw).mean(), z
            )
            torch.testing.assert_close(ours, want, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(
                RankedListLoss(**kw)(z, labels, ref_emb=ref, ref_labels=ref_labels),
                ref_ranked_list_loss(z, labels, ref, ref_labels, **kw).mean(),
            )

    def test_unnormalised_distance(self):
        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        z = z * 0.3
        loss = RankedListLoss(distance=LpDistance(normalize_embeddings=False))
        torch.testing.assert_close(
            loss(z, labels), ref_ranked_list_loss(z, labels, normalize=False).mean()
        )


class TestDegenerateBatches:
    def test_fully_collapsed_batch(self, dtype):
        # every pair at distance 0: P* is empty (0 < α − m), N* holds every negative,
        # so L(i) = λ·α for each query
        labels = torch.arange(4).repeat_interleave(3)
        z = torch.randn(1, 8, dtype=dtype).repeat(12, 1).requires_grad_(True)
        ours = RankedListLoss(lam=1.5)(z, labels)
        ref = ref_ranked_list_loss(z, labels, lam=1.5).mean()
        torch.testing.assert_close(ours.double(), ref)
        torch.testing.assert_close(ours.double(), torch.tensor(1.5 * 1.2, dtype=torch.float64))
        ours.backward()
        assert torch.isfinite(z.grad).all()
        # PML drops every pair at distance exactly 0 and returns 0
        assert _pml(imbalance=0.6)(z, labels).item() == 0.0

    def test_nearly_collapsed_batch_has_finite_nonzero_gradient(self):
        labels = torch.arange(4).repeat_interleave(3)
        g = torch.Generator().manual_seed(3)
        z = torch.randn(1, 8, generator=g) + 1e-4 * torch.randn(12, 8, generator=g)
        ours = _grad(lambda x: RankedListLoss()(x, labels), z)
        assert torch.isfinite(ours).all() and ours.abs().max() > 1e-3
        ref = _grad(lambda x: ref_ranked_list_loss(x, labels).mean(), z.double())
        torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            RankedListLoss()(z, labels).double(), ref_ranked_list_loss(z, labels).mean()
        )

    def test_exact_duplicates(self):
        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        z[1] = z[0]  # same class
        z[3] = z[0]  # other class: a negative at distance 0
        z[7] = z[6]
        ours = RankedListLoss()(z, labels)
        ref = ref_ranked_list_loss(z, labels).mean()
        torch.testing.assert_close(ours, ref)
        g_ours = _grad(lambda x: RankedListLoss()(x, labels), z)
        g_ref = _grad(lambda x: ref_ranked_list_loss(x, labels).mean(), z)
        assert torch.isfinite(g_ours).all()
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)
        # PML (imbalance 0.5 = λ 1 at half scale) drops the zero-distance negative
        pml = 2 * _pml()(z, labels)
        assert abs(pml.item() - ref.item()) > 0.05

    def test_empty_positive_sets(self):
        # one sample per class: every P* is empty, L = λ·L_N
        z, labels = _batch(n_classes=12, per_class=1, dim=8)
        ours = RankedListLoss(Tp=2.0, lam=0.7)(z, labels)
        torch.testing.assert_close(ours, ref_ranked_list_loss(z, labels, Tp=2.0, lam=0.7).mean())
        just_neg = ref_ranked_list_loss(z, labels, Tp=2.0, lam=1.0).mean() * 0.7
        torch.testing.assert_close(ours, just_neg)

    def test_empty_sets_give_zero_with_graph(self):
        # a single class: no negatives; α − m above every distance: no positives
        z, labels = _batch(n_classes=1, per_class=6, dim=8)
        z = z.requires_grad_(True)
        loss = RankedListLoss(margin=0.1, alpha=2.5)(z, labels)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.equal(z.grad, torch.zeros_like(z))

    def test_empty_negative_sets(self):
        # α small: no negative is closer than α, L = L_P
        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        ours = RankedListLoss(margin=0.3, alpha=0.5)(z, labels)
        want = ref_ranked_list_loss(z, labels, margin=0.3, alpha=0.5).mean()
        torch.testing.assert_close(ours, want)
        no_neg = RankedListLoss(margin=0.3, alpha=0.5, lam=0.0)(z, labels)
        torch.testing.assert_close(ours, no_neg)
        assert ours > 0


class TestAgainstPML:
    def test_imbalance_mapping(self):
        # PML: (1 − λ')·L_P + λ'·L_N = (1 − λ')·(L_P + λ·L_N) with λ = λ'/(1 − λ');
        # PML also adds 1e-5 per column to the weight sums, hence the loose rtol
        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        for imbalance in (0.2, 0.5, 0.8):
            pml = _pml(margin=0.4, Tn=3.0, imbalance=imbalance, Tp=1.0)(z, labels)
            ours = RankedListLoss(margin=0.4, Tn=3.0, Tp=1.0, lam=imbalance / (1 - imbalance))
            torch.testing.assert_close((1 - imbalance) * ours(z, labels), pml, rtol=1e-3, atol=0)

    def test_float16_with_tn_10(self):
        # a near-collapsed float16 batch: negatives at d ≈ 0.03 give w = exp(10·1.17) > 65504
        labels = torch.arange(4).repeat_interleave(3)
        g = torch.Generator().manual_seed(0)
        z = (torch.randn(1, 8, generator=g) + 0.02 * torch.randn(12, 8, generator=g)).half()
        ours = RankedListLoss(Tn=10.0)(z, labels)
        assert torch.isfinite(ours)
        torch.testing.assert_close(ours.double(), ref_ranked_list_loss(z.double(), labels).mean())
        ours20 = RankedListLoss(Tn=20.0)(z, labels)
        torch.testing.assert_close(
            ours20.double(), ref_ranked_list_loss(z.double(), labels, Tn=20.0).mean()
        )
        assert not torch.isfinite(_pml(Tn=10.0)(z, labels))  # PML: inf / inf

    def test_huge_temperature_stays_finite(self):
        # exp(T_n·(α − d)) overflows even float64 at T_n = 5000; the max-subtracted weights
        # pick the closest negative: L_N(i) → α − min_{N*_i} d_ij (and L_P → max excess at T_p)
        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        d = torch.tensor(ref_distance_matrix(z), dtype=torch.float64)
        same = labels[:, None] == labels[None]
        off = ~torch.eye(12, dtype=torch.bool)
        neg = torch.where(~same & (d < 1.2), d, torch.inf).amin(1)
        pos = torch.where(same & off & (d > 0.8), d, -torch.inf).amax(1)
        want = torch.where(torch.isfinite(pos), pos - 0.8, 0.0) + torch.where(
            torch.isfinite(neg), 1.2 - neg, 0.0
        )
        ours = ranked_list_loss(z, labels, Tn=5000.0, Tp=5000.0)
        torch.testing.assert_close(ours, want, rtol=0, atol=1e-3)
        loss = RankedListLoss(Tn=5000.0, Tp=5000.0)
        assert torch.isfinite(_grad(lambda x: loss(x, labels), z)).all()

    def test_bfloat16_autocast(self):
        z, labels = _batch(n_classes=4, per_class=3, dim=8, dtype=torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = RankedListLoss()(z, labels)
        assert out.dtype == torch.float32
        want = ref_ranked_list_loss(z, labels).mean()
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)


class TestPMLContract:
    def test_element_losses_and_reducer(self):
        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        per_query = ref_ranked_list_loss(z, labels)
        loss = RankedListLoss(reducer=reducers.AvgNonZeroReducer())
        torch.testing.assert_close(loss(z, labels), per_query[per_query > 0].mean())
        torch.testing.assert_close(ranked_list_loss(z, labels), per_query)

    def test_stats(self):
        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        loss = RankedListLoss(collect_stats=True)
        loss(z, labels)
        d = torch.tensor(ref_distance_matrix(z))
        same = labels[:, None] == labels[None]
        off = ~torch.eye(12, dtype=torch.bool)
        assert int(loss.num_positive_pairs) == int((same & off & (d > 0.8)).sum())
        assert int(loss.num_negative_pairs) == int((~same & (d < 1.2)).sum())

    def test_embedding_regularizer_identity(self):
        from pytorch_metric_learning.regularizers import LpRegularizer

        z, labels = _batch(n_classes=4, per_class=3, dim=8)
        bare = RankedListLoss()(z, labels)
        reg = RankedListLoss(embedding_regularizer=LpRegularizer(), embedding_reg_weight=0.1)
        torch.testing.assert_close(reg(z, labels), bare + 0.1 * z.norm(dim=1).mean())


class TestBadInput:
    def test_labels_missing(self):
        with pytest.raises(ValueError, match="labels are required"):
            RankedListLoss()(torch.randn(4, 3))

    def test_labels_wrong_length(self):
        with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
            RankedListLoss()(torch.randn(4, 3), torch.tensor([0, 1, 0]))

    def test_ref_labels_wrong_length(self):
        with pytest.raises(ValueError, match=r"ref_labels must have shape \(5,\)"):
            ranked_list_loss(
                torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.randn(5, 3), torch.tensor([0])
            )

    @pytest.mark.parametrize("margin", [0, -0.1, float("nan")])
    def test_non_positive_margin(self, margin):
        with pytest.raises(ValueError, match="margin must be a finite number > 0"):
            RankedListLoss(margin=margin)

    def test_alpha_not_above_margin(self):
        with pytest.raises(ValueError, match="alpha must be greater than margin"):
            RankedListLoss(margin=0.5, alpha=0.5)

    def test_negative_temperature(self):
        with pytest.raises(ValueError, match="Tn must be a finite number >= 0"):
            RankedListLoss(Tn=-1)

    def test_inverted_distance_rejected(self):
        with pytest.raises(ValueError, match=r"distance must be a distance, not a similarity"):
            RankedListLoss(distance=CosineSimilarity())

    def test_other_distance_rejected(self):
        with pytest.raises(ValueError, match=r"distance must be LpDistance\(p=2, power=1\)"):
            RankedListLoss(distance=LpDistance(p=1))

    def test_indices_tuple_rejected(self):
        z, labels = _batch(n_classes=2, per_class=2, dim=4)
        with pytest.raises(ValueError, match="indices_tuple is not supported"):
            RankedListLoss()(z, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))


class TestDevice:
    def test_value_and_gradient_on_device(self, device):
        z, labels = _batch(n_classes=4, per_class=3, dim=8, dtype=torch.float32)
        x = z.to(device).requires_grad_(True)
        out = RankedListLoss(Tp=1.0)(x, labels.to(device))
        out.backward()
        assert out.device.type == device
        torch.testing.assert_close(
            out.double().cpu(), ref_ranked_list_loss(z, labels, Tp=1.0).mean(), rtol=1e-5, atol=1e-6
        )
        want = _grad(lambda v: ref_ranked_list_loss(v, labels, Tp=1.0).mean(), z.double())
        torch.testing.assert_close(x.grad.double().cpu(), want, rtol=1e-4, atol=1e-6)

    def test_half_autocast_on_device(self, device):
        if device == "cpu":
            pytest.skip("float16 autocast is a CUDA feature")
        z, labels = _batch(n_classes=4, per_class=3, dim=8, dtype=torch.float32)
        with torch.autocast("cuda", dtype=torch.float16):
            h = torch.nn.Linear(8, 8).to(device)(z.to(device))
            out = RankedListLoss(Tn=20.0)(h, labels.to(device))
        assert h.dtype == torch.float16 and torch.isfinite(out)
        want = ref_ranked_list_loss(h.detach().double().cpu(), labels, Tn=20.0).mean()
        torch.testing.assert_close(out.double().cpu(), want, rtol=1e-5, atol=1e-6)


class TestHardening:
    """Issue 14: NaN batches refused, extreme magnitudes measured, huge temperatures finite."""

    def test_nan_row_raises_in_the_class_on_cpu(self):
        z, labels = _batch(n_classes=3, per_class=2, dim=4, dtype=torch.float32)
        z[3, 1] = float("nan")
        with pytest.raises(ValueError, match=r"embeddings must be finite.*\(first in row 3\)"):
            RankedListLoss()(z, labels)
        with pytest.raises(ValueError, match=r"embeddings must be finite"):
            ranked_list_loss(z, labels)

    def test_check_false_lets_a_nan_through(self):
        z, labels = _batch(n_classes=3, per_class=2, dim=4, dtype=torch.float32)
        z[3, 1] = float("nan")
        RankedListLoss(check=False)(z, labels)  # no raise: the caller asked for no check
        ranked_list_loss(z, labels, check=False)

    @pytest.mark.parametrize("scale", [1e30, 1e-30, 1e-40])
    @pytest.mark.parametrize("normalize", [True, False])
    def test_extreme_magnitudes_match_the_reference(self, scale, normalize):
        z, labels = _batch(n_classes=4, per_class=3, dim=6, dtype=torch.float64)
        x = (z * scale).float()  # 1e-40 is a float32 subnormal
        want = ref_ranked_list_loss(x.double(), labels, normalize=normalize)
        got = ranked_list_loss(x, labels, normalize=normalize)
        torch.testing.assert_close(got.double(), want.float().double(), rtol=1e-5, atol=1e-6)
        if normalize and scale != 1e-40:  # the same as at scale 1 (1e-40 rounds the input more)
            torch.testing.assert_close(got, ranked_list_loss(z.float(), labels), rtol=1e-5,
                                       atol=1e-6)

    def test_huge_temperature_gives_the_hardest_negative(self):
        # T_n → ∞: the weighted mean over N* becomes the largest α − d (plain exp would overflow)
        z, labels = _batch(n_classes=4, per_class=3, dim=6)
        alpha = 1.2
        d = ref_distance_matrix(z)
        want = []
        for i, row in enumerate(d):
            neg = [alpha - v for j, v in enumerate(row) if labels[j] != labels[i] and v < alpha]
            want.append(max(neg) if neg else 0.0)
        got = ranked_list_loss(z, labels, Tn=1e300, lam=1.0, margin=0.4, alpha=alpha)
        got_p = ranked_list_loss(z, labels, Tn=1e300, lam=0.0, margin=0.4, alpha=alpha)
        torch.testing.assert_close(got - got_p, torch.tensor(want, dtype=torch.float64))

    def test_ref_emb_on_another_device_is_refused(self):
        z, labels = _batch(n_classes=2, per_class=2, dim=4)
        with pytest.raises(ValueError, match=r"ref_emb must be on the embeddings' device"):
            RankedListLoss()(z, labels, ref_emb=z.to("meta"), ref_labels=labels)

    @pytest.mark.parametrize("kwargs,exc,match", [
        (dict(detach_weights="False"), TypeError, "detach_weights must be a bool"),
        (dict(query_grad_only=1), TypeError, "query_grad_only must be a bool"),
        (dict(check="no"), TypeError, "check must be a bool"),
        (dict(lam=True), TypeError, "lam must be a non-negative number, got bool"),
        (dict(Tn=float("inf")), ValueError, "Tn must be a finite number >= 0, got inf"),
    ])
    def test_bad_flags_and_numbers(self, kwargs, exc, match):
        with pytest.raises(exc, match=match):
            RankedListLoss(**kwargs)

    def test_numpy_numbers_are_accepted(self):
        np = pytest.importorskip("numpy")
        z, labels = _batch(n_classes=3, per_class=2, dim=4)
        torch.testing.assert_close(
            RankedListLoss(margin=np.float32(0.4), Tn=np.int64(10))(z, labels),
            RankedListLoss(margin=float(np.float32(0.4)), Tn=10.0)(z, labels),
        )
