"""EasyPositiveMiner against brute-force references, PML's BatchEasyHardMiner, and inside PML's
TripletMarginLoss / MarginLoss / CrossBatchMemory pipelines."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from scipy import stats

from pml_anticollapse import EasyPositiveMiner
from tests.reference_ranking import (
    ref_distance_matrix,
    ref_distance_weighted_probs,
    ref_easy_positive_choices,
    ref_easy_positive_triplets,
)

DETERMINISTIC = ["hard", "semihard", "all"]


def _batch(n_classes=5, per_class=4, dim=8, seed=0, spread=0.8):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    centres = torch.randn(n_classes, dim, generator=g, dtype=torch.float64)
    z = centres[labels] + spread * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return z, labels


def _triplets(out):
    a, p, n = out
    return set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))


class TestAgainstBruteForce:
    @pytest.mark.parametrize("neg_strategy", DETERMINISTIC)
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_random_batches(self, neg_strategy, seed):
        z, labels = _batch(seed=seed)
        out = EasyPositiveMiner(neg_strategy=neg_strategy)(z, labels)
        assert _triplets(out) == ref_easy_positive_triplets(z, labels, neg_strategy=neg_strategy)
        if neg_strategy != "all":
            assert len(out[0]) == len(z)  # one triplet per anchor, none dropped

    @pytest.mark.parametrize("neg_strategy", DETERMINISTIC)
    def test_ref_emb(self, neg_strategy):
        z, labels = _batch(seed=3)
        ref, ref_labels = _batch(n_classes=6, per_class=5, seed=4)
        out = EasyPositiveMiner(neg_strategy=neg_strategy)(z, labels, ref, ref_labels)
        want = ref_easy_positive_triplets(z, labels, ref, ref_labels, neg_strategy=neg_strategy)
        assert _triplets(out) == want

    @pytest.mark.parametrize("neg_strategy", DETERMINISTIC)
    def test_duplicates_are_not_positives(self, neg_strategy):
        z, labels = _batch(seed=5)
        z[1] = z[0]  # exact duplicate
        z[2] = z[0] + 1e-4  # near duplicate
        z[9] = z[8]
        miner = EasyPositiveMiner(neg_strategy=neg_strategy)
        out = miner(z, labels)
        assert _triplets(out) == ref_easy_positive_triplets(z, labels, neg_strategy=neg_strategy)
        positives = dict(zip(out[0].tolist(), out[1].tolist(), strict=True))
        assert positives[0] not in (1, 2) and positives[1] not in (0, 2) and positives[8] != 9
        assert int(miner.num_duplicate_positives) == 5  # anchors 0, 1, 2, 8, 9

    def test_semihard_fallback(self):
        # anchor 0: positive at distance 1, both negatives closer -> no semi-hard negative
        z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.2, 0.0], [0.0, 0.3]])
        labels = torch.tensor([0, 0, 1, 1])
        d = LpDistance(normalize_embeddings=False)
        hard = EasyPositiveMiner("semihard", distance=d)
        out = _triplets(hard(z, labels))
        assert out == ref_easy_positive_triplets(
            z, labels, neg_strategy="semihard", semihard_fallback="hard", normalize=False
        )
        assert (0, 1, 2) in out  # the hardest negative, not a dropped anchor
        assert int(hard.num_negative_fallbacks) == 1
        skip = EasyPositiveMiner("semihard", semihard_fallback="skip", distance=d)
        out_skip = _triplets(skip(z, labels))
        assert out_skip == ref_easy_positive_triplets(
            z, labels, neg_strategy="semihard", semihard_fallback="skip", normalize=False
        )
        assert 0 not in {a for a, _, _ in out_skip}
        assert int(skip.num_skipped_anchors) == int(hard.num_negative_fallbacks)
        assert int(skip.num_negative_fallbacks) == 0

    def test_anchors_without_positive_or_negative_are_counted(self):
        z, labels = _batch(seed=6)
        labels = labels.clone()
        labels[3] = 99  # singleton class: no positive
        miner = EasyPositiveMiner("hard")
        a, _, _ = miner(z, labels)
        assert 3 not in a.tolist()
        assert int(miner.num_anchors_without_positive) == 1
        assert int(miner.num_skipped_anchors) == 1
        one_class = EasyPositiveMiner("hard")
        out = one_class(z, torch.zeros_like(labels))
        assert len(out[0]) == 0
        assert int(one_class.num_anchors_without_negative) == len(z)
        assert int(one_class.num_skipped_anchors) == len(z)

    def test_cosine_similarity_gives_the_same_triplets(self):
        z, labels = _batch(seed=7)
        for strategy in ("hard", "semihard"):
            lp = EasyPositiveMiner(strategy)(z, labels)
            cos = EasyPositiveMiner(strategy, distance=CosineSimilarity())(z, labels)
            assert _triplets(lp) == _triplets(cos)


class TestAgainstPML:
    @pytest.mark.parametrize("seed", [0, 1, 2, 3])
    def test_equals_batch_easy_hard_miner(self, seed):
        z, labels = _batch(seed=seed)
        ours = EasyPositiveMiner("hard")(z, labels)
        a1, p, a2, n = pml_miners.BatchEasyHardMiner(pos_strategy="easy", neg_strategy="hard")(
            z, labels
        )
        assert torch.equal(a1, a2)
        assert _triplets(ours) == _triplets((a1, p, n))

    def test_pml_takes_a_duplicate_as_positive(self):
        z, labels = _batch(seed=0)
        z[1] = z[0]
        a1, p, _, _ = pml_miners.BatchEasyHardMiner(pos_strategy="easy", neg_strategy="hard")(
            z, labels
        )
        # PML: the duplicate, at distance 0
        assert dict(zip(a1.tolist(), p.tolist(), strict=True))[0] == 1
        a, p_ours, _ = EasyPositiveMiner("hard")(z, labels)
        assert dict(zip(a.tolist(), p_ours.tolist(), strict=True))[0] != 1


class TestDistanceWeighted:
    def _setup(self):
        z, labels = _batch(n_classes=4, per_class=4, dim=6, seed=8, spread=1.0)
        d = ref_distance_matrix(z)
        choices = ref_easy_positive_choices(z, labels)
        probs = [ref_distance_weighted_probs(negs, dim=6) for _, negs, _ in choices]
        return z, labels, d, choices, probs

    def test_sampling_distribution_chi_square(self):
        z, labels, _, choices, probs = self._setup()
        draws = 1000  # smallest expected cell count ≈ 16
        miner = EasyPositiveMiner("distance_weighted", generator=torch.Generator().manual_seed(0))
        want_p = torch.tensor([c[0] for c in choices])
        negatives = []
        for _ in range(draws):
            a, p, n = miner(z, labels)
            assert torch.equal(a, torch.arange(len(z))) and torch.equal(p, want_p)
            negatives.append(n)
        drawn = torch.stack(negatives)  # (draws, anchors)
        counts = torch.zeros(len(z), len(z), dtype=torch.float64)
        counts.scatter_add_(1, drawn.T, torch.ones(drawn.T.shape, dtype=torch.float64))
        chi2, dof, chi2_uniform = 0.0, 0, 0.0
        for i, pr in enumerate(probs):
            idx = sorted(pr)
            obs = counts[i, idx]
            assert obs.sum() == draws and counts[i].sum() == obs.sum()  # only eligible negatives
            exp = torch.tensor([pr[j] for j in idx], dtype=torch.float64) * draws
            chi2 += float(((obs - exp) ** 2 / exp).sum())
            uni = torch.full_like(exp, draws / len(idx))
            chi2_uniform += float(((obs - uni) ** 2 / uni).sum())
            dof += len(idx) - 1
        assert stats.chi2.sf(chi2, dof) > 1e-3
        # the test has power: the same counts reject uniform sampling outright
        assert stats.chi2.sf(chi2_uniform, dof) < 1e-6

    def test_reproducible_with_a_seed(self):
        z, labels, *_ = self._setup()
        runs = []
        for _ in range(2):
            g = torch.Generator().manual_seed(3)
            miner = EasyPositiveMiner("distance_weighted", generator=g)
            runs.append([miner(z, labels)[2] for _ in range(5)])
        assert all(torch.equal(x, y) for x, y in zip(*runs, strict=True))
        torch.manual_seed(11)
        first = EasyPositiveMiner("distance_weighted")(z, labels)[2]
        torch.manual_seed(11)
        assert torch.equal(first, EasyPositiveMiner("distance_weighted")(z, labels)[2])

    def test_uniform_fallback_when_no_negative_is_close(self):
        # two antipodal classes: every negative is beyond nonzero_loss_cutoff
        g = torch.Generator().manual_seed(0)
        base = torch.randn(1, 6, generator=g, dtype=torch.float64)
        z = torch.cat([base + 0.05 * torch.randn(3, 6, generator=g, dtype=torch.float64),
                       -base + 0.05 * torch.randn(3, 6, generator=g, dtype=torch.float64)])
        labels = torch.tensor([0, 0, 0, 1, 1, 1])
        miner = EasyPositiveMiner("distance_weighted", generator=torch.Generator().manual_seed(0))
        seen = set()
        for _ in range(60):
            a, p, n = miner(z, labels)
            assert len(a) == 6 and bool((labels[a] != labels[n]).all())
            seen.update(zip(a.tolist(), n.tolist(), strict=True))
        assert int(miner.num_negative_fallbacks) == 6
        assert len(seen) == 18  # every negative of every anchor drawn

    def test_needs_normalised_euclidean_distance(self):
        with pytest.raises(ValueError, match="neg_strategy='distance_weighted' needs"):
            EasyPositiveMiner("distance_weighted", distance=CosineSimilarity())
        with pytest.raises(ValueError, match="neg_strategy='distance_weighted' needs"):
            EasyPositiveMiner("distance_weighted", distance=LpDistance(normalize_embeddings=False))


class TestPMLPipelines:
    @pytest.mark.parametrize("neg_strategy", ["hard", "semihard", "distance_weighted", "all"])
    def test_triplet_margin_loss(self, neg_strategy):
        z, labels = _batch(seed=9)
        z = z.float().requires_grad_(True)
        miner = EasyPositiveMiner(neg_strategy, generator=torch.Generator().manual_seed(0))
        triplets = miner(z, labels)
        loss = pml_losses.TripletMarginLoss(margin=0.2)(z, labels, triplets)
        a, p, n = triplets
        zn = torch.nn.functional.normalize(z, dim=1)
        manual = torch.relu((zn[a] - zn[p]).norm(dim=1) - (zn[a] - zn[n]).norm(dim=1) + 0.2)
        torch.testing.assert_close(loss, manual[manual > 0].mean())  # AvgNonZeroReducer
        loss.backward()
        assert torch.isfinite(z.grad).all()

    def test_margin_loss(self):
        z, labels = _batch(seed=10)
        z = z.float().requires_grad_(True)
        miner = EasyPositiveMiner("distance_weighted", generator=torch.Generator().manual_seed(0))
        loss = pml_losses.MarginLoss(margin=0.2, beta=1.2)(z, labels, miner(z, labels))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()

    @pytest.mark.parametrize("neg_strategy", ["hard", "semihard", "distance_weighted"])
    def test_cross_batch_memory(self, neg_strategy):
        miner = EasyPositiveMiner(neg_strategy, generator=torch.Generator().manual_seed(0))
        xbm = pml_losses.CrossBatchMemory(
            pml_losses.TripletMarginLoss(margin=0.2), embedding_size=8, memory_size=60, miner=miner
        )
        for step in range(4):
            z, labels = _batch(seed=20 + step)
            z = z.float().requires_grad_(True)
            loss = xbm(z, labels)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
            # the anchor's own memory copy is a duplicate, never its positive: PML's
            # remove_self_comparisons then drops no triplet
            filled = min(len(z) * (step + 1), 60)
            a, p, n = miner(z, labels, xbm.embedding_memory[:filled], xbm.label_memory[:filled])
            own = xbm.curr_batch_idx
            assert not bool((own[a] == p).any())
            assert len(a) == len(z)


class TestBadInput:
    def test_labels_missing(self):
        with pytest.raises(ValueError, match="labels are required"):
            EasyPositiveMiner()(torch.randn(4, 3), None)

    def test_labels_wrong_length(self):
        with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
            EasyPositiveMiner()(torch.randn(4, 3), torch.tensor([0, 1, 0]))

    def test_ref_labels_wrong_length(self):
        with pytest.raises(ValueError, match=r"ref_labels must have shape \(5,\)"):
            EasyPositiveMiner()(
                torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.randn(5, 3), torch.tensor([0])
            )

    def test_ref_emb_without_ref_labels(self):
        with pytest.raises(ValueError, match="ref_emb and ref_labels must be given together"):
            EasyPositiveMiner()(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.randn(5, 3))

    def test_ref_emb_wrong_dim(self):
        with pytest.raises(ValueError, match="ref_emb must have dim 3"):
            EasyPositiveMiner()(
                torch.randn(4, 3),
                torch.tensor([0, 1, 0, 1]),
                torch.randn(5, 2),
                torch.zeros(5, dtype=torch.long),
            )

    def test_unknown_strategy(self):
        expected = (
            "neg_strategy must be one of 'semihard', 'hard', 'distance_weighted', 'all', "
            "got 'easy'"
        )
        with pytest.raises(ValueError, match=expected):
            EasyPositiveMiner("easy")
        with pytest.raises(ValueError, match="semihard_fallback must be one of"):
            EasyPositiveMiner(semihard_fallback="random")

    def test_bad_numbers(self):
        with pytest.raises(ValueError, match="min_pos_distance must be a finite number >= 0"):
            EasyPositiveMiner(min_pos_distance=-1.0)
        with pytest.raises(ValueError, match="cutoff must be a finite number > 0"):
            EasyPositiveMiner(cutoff=0)
        with pytest.raises(ValueError, match="nonzero_loss_cutoff must be greater than cutoff"):
            EasyPositiveMiner(cutoff=1.0, nonzero_loss_cutoff=0.9)

    def test_bad_generator(self):
        with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
            EasyPositiveMiner(generator=0)

    def test_float_labels(self):
        with pytest.raises(TypeError, match="labels must have an integer dtype"):
            EasyPositiveMiner()(torch.randn(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0]))


class TestDevice:
    @pytest.mark.parametrize("neg_strategy", DETERMINISTIC)
    def test_triplets_on_device(self, device, neg_strategy):
        z, labels = _batch(seed=12)
        out = EasyPositiveMiner(neg_strategy)(z.to(device), labels.to(device))
        assert all(t.device.type == device for t in out)
        want = ref_easy_positive_triplets(z, labels, neg_strategy=neg_strategy)
        assert _triplets(out) == want

    def test_cpu_generator_with_device_tensors(self, device):
        z, labels = _batch(seed=13)
        runs = []
        for _ in range(2):
            g = torch.Generator().manual_seed(5)
            miner = EasyPositiveMiner("distance_weighted", generator=g)
            runs.append(miner(z.float().to(device), labels.to(device)))
        assert runs[0][2].device.type == device
        assert all(torch.equal(x, y) for x, y in zip(*runs, strict=True))


class TestHardening:
    """Issue 14: no triplets from a NaN batch; extreme magnitudes mined like scale 1."""

    def test_nan_batch_is_refused_on_cpu(self):
        z, labels = _batch()
        z[5, 0] = float("nan")
        with pytest.raises(ValueError, match=r"embeddings must be finite.*\(first in row 5\)"):
            EasyPositiveMiner()(z, labels)
        with pytest.raises(ValueError, match=r"ref_emb must be finite"):
            EasyPositiveMiner()(_batch()[0], labels, z, labels)

    @pytest.mark.parametrize("neg_strategy", DETERMINISTIC)
    @pytest.mark.parametrize("scale", [1e30, 1e-30])
    def test_extreme_magnitudes_match_the_brute_force(self, neg_strategy, scale):
        z, labels = _batch(seed=3)
        x = (z * scale).float()
        want = ref_easy_positive_triplets(x.double() / scale, labels, neg_strategy=neg_strategy)
        assert _triplets(EasyPositiveMiner(neg_strategy)(x, labels)) == want
        assert want  # the check has triplets to compare

    def test_overflowing_distances_are_refused(self):
        z = torch.tensor([[3e38, 0.0], [-3e38, 0.0]])
        miner = EasyPositiveMiner(distance=LpDistance(normalize_embeddings=False))
        with pytest.raises(ValueError, match="the distances between embeddings and ref_emb"):
            miner(z, torch.tensor([0, 1]))

    def test_ref_emb_dtype_and_device_must_match(self):
        z, labels = _batch()
        x = z.float()
        with pytest.raises(TypeError, match=r"ref_emb must have the embeddings' dtype"):
            EasyPositiveMiner()(x, labels, z, labels)
        with pytest.raises(ValueError, match=r"ref_emb must be on the embeddings' device"):
            EasyPositiveMiner()(x, labels, x.to("meta"), labels)

    def test_check_must_be_a_bool(self):
        with pytest.raises(TypeError, match=r"check must be a bool \(True or False\), got str"):
            EasyPositiveMiner(check="False")


class TestFunctionalTwin:
    """``functional.easy_positive_triplets``: the same triplets as the brute-force reference, and
    the class is a thin adapter over it."""

    @pytest.mark.parametrize("neg_strategy", DETERMINISTIC)
    @pytest.mark.parametrize("with_ref", [False, True], ids=["self", "ref"])
    def test_against_brute_force(self, neg_strategy, with_ref):
        from pml_anticollapse.functional import easy_positive_triplets

        z, labels = _batch(seed=7)
        ref, ref_labels = _batch(n_classes=6, per_class=5, seed=8) if with_ref else (None, None)
        out = easy_positive_triplets(z, labels, ref, ref_labels, neg_strategy=neg_strategy)
        got = set(zip(out.anchors.tolist(), out.positives.tolist(), out.negatives.tolist(),
                      strict=True))
        assert got == ref_easy_positive_triplets(
            z, labels, ref, ref_labels, neg_strategy=neg_strategy
        )

    @pytest.mark.parametrize("neg_strategy", DETERMINISTIC)
    def test_class_equals_function(self, neg_strategy):
        from pml_anticollapse.functional import easy_positive_triplets

        z, labels = _batch(seed=9)
        z[3] = z[2]  # a duplicate, so that the counts are not all zero
        miner = EasyPositiveMiner(neg_strategy=neg_strategy)
        a, p, n = miner(z, labels)
        out = easy_positive_triplets(z, labels, neg_strategy=neg_strategy)
        for got, want in zip((a, p, n), out[:3], strict=True):
            assert torch.equal(got, want)
        assert int(miner.num_duplicate_positives) == int(out.duplicate_positive.sum()) == 2
        assert int(miner.num_skipped_anchors) == int((~out.kept).sum())

    def test_similarity_matrix(self):
        # cosine similarities of unit rows: the same choices as the Euclidean distances
        from pml_anticollapse.functional import easy_positive_triplets

        z, labels = _batch(seed=10)
        x = torch.nn.functional.normalize(z, dim=1)
        by_sim = easy_positive_triplets(z, labels, distances=x @ x.T, similarity=True,
                                        neg_strategy="semihard")
        by_dist = easy_positive_triplets(z, labels, neg_strategy="semihard")
        for got, want in zip(by_sim[:3], by_dist[:3], strict=True):
            assert torch.equal(got, want)

    @pytest.mark.parametrize("call, exc, match", [
        (dict(distances=torch.zeros(3, 3)), ValueError, r"distances must have shape \(20, 20\)"),
        (dict(distances=torch.zeros(20, 20, dtype=torch.long)), TypeError,
         "distances must be a floating-point"),
        (dict(similarity=True), ValueError, "similarity=True needs a distances matrix"),
        (dict(neg_strategy="distance_weighted", normalize=False), ValueError,
         "neg_strategy='distance_weighted' needs Euclidean distances"),
        (dict(cutoff=1.5), ValueError, r"nonzero_loss_cutoff must be greater than cutoff"),
        (dict(generator=0), TypeError, "generator must be a torch.Generator or None, got int"),
    ], ids=["shape", "dtype", "similarity", "dw-unnormalised", "cutoffs", "generator"])
    def test_bad_arguments(self, call, exc, match):
        from pml_anticollapse.functional import easy_positive_triplets

        z, labels = _batch()
        with pytest.raises(exc, match=match):
            easy_positive_triplets(z, labels, **call)


class TestLowPrecision:
    """float16/bfloat16 rows (as autocast hands them) are mined in float32: the triplets of the
    rounded rows, against the float64 brute force fed the same rounded rows."""

    @pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
    @pytest.mark.parametrize("distance", [None, CosineSimilarity()], ids=["lp", "cosine"])
    @pytest.mark.parametrize("neg_strategy", ["hard", "semihard"])
    def test_triplets_of_the_rounded_rows(self, low, distance, neg_strategy):
        z, labels = _batch(seed=11, spread=1.5)
        zl = z.to(low)
        kwargs = {} if distance is None else {"distance": distance}
        out = EasyPositiveMiner(neg_strategy=neg_strategy, **kwargs)(zl, labels)
        want = ref_easy_positive_triplets(zl.double(), labels, neg_strategy=neg_strategy)
        assert _triplets(out) == want

    @pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
    def test_functional_and_ref_emb(self, low):
        from pml_anticollapse.functional import easy_positive_triplets

        z, labels = _batch(seed=12, spread=1.5)
        ref, ref_labels = _batch(n_classes=6, per_class=5, seed=13)
        out = easy_positive_triplets(z.to(low), labels, ref.to(low), ref_labels,
                                     neg_strategy="hard")
        got = set(zip(out.anchors.tolist(), out.positives.tolist(), out.negatives.tolist(),
                      strict=True))
        want = ref_easy_positive_triplets(z.to(low).double(), labels, ref.to(low).double(),
                                          ref_labels, neg_strategy="hard")
        assert got == want
        miner_out = EasyPositiveMiner(neg_strategy="hard")(z.to(low), labels, ref.to(low),
                                                          ref_labels)
        assert _triplets(miner_out) == want
