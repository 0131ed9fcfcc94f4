"""The one list of bad inputs: every call must raise exactly the error shown, with a message
that names the argument.

``ROWS`` is the single source: the tests below run every row, and :func:`markdown_table` renders
the same rows as the Markdown table the documentation shows (numbered in list order), so the
table and the code cannot drift. Each row is ``Row(call, error, pattern, also)``: the call is
evaluated in the namespace :func:`namespace` builds (``NAMESPACE_DOC`` describes it) and must
raise exactly ``error``, with a message matching ``pattern`` (a Python regex) from its start;
``also`` names the module's own test of the same row, where there is one.

Print the table with ``python -m tests.test_bad_inputs``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.losses import ContrastiveLoss, CrossBatchMemory, ProxyAnchorLoss

import pml_anticollapse
from pml_anticollapse import distributed, functional

ROOT = Path(__file__).resolve().parent.parent


class Row(NamedTuple):
    call: str
    error: type[Exception]
    pattern: str
    also: str | None = None


NAMESPACE_DOC = """\
Each row is run by `tests/test_bad_inputs.py`, which holds the list this table is generated from:
the call is evaluated with `torch`, `F` (`pml_anticollapse.functional`), `D`
(`pml_anticollapse.distributed`), the package's classes, PML's `CosineSimilarity`, `LpDistance`,
`ContrastiveLoss`, `ProxyAnchorLoss` and `CrossBatchMemory` in scope, and `z = torch.randn(6, 4)`,
`labels = torch.tensor([0, 0, 1, 1, 2, 2])`, `z_nan` / `z_inf` (`z` with a NaN / inf in row 2);
it must raise exactly the type shown with a message matching the pattern from its start (a Python
regex). `torch.device("meta")` stands in for a second device (CUDA) so the rows run anywhere. The
last column names the module's own test of the same row, where there is one. `Exception` is PML's
own: `CrossBatchMemory` refuses, in its constructor, every loss not on its fixed list of class
names (use the memory as `ref_emb` instead, or the regularizer on the inner loss)."""

# one call per line: the list reads as the table it renders
ROWS: list[Row] = [
    Row("F.coding_rate([[1.0, 0.0]])", TypeError, r"z must be a torch\.Tensor, got list"),
    Row("F.coding_rate(torch.zeros(3, 4, 5))", ValueError, r"z must have shape \(batch_size, dim\), got \(3, 4, 5\)"),
    Row("F.coding_rate(torch.zeros(0, 4))", ValueError, r"z must not be empty, got shape \(0, 4\)"),
    Row("F.coding_rate(torch.ones(3, 4, dtype=torch.int64))", TypeError, r"z must have a floating-point dtype .*got torch\.int64"),
    Row("F.coding_rate(z_nan)", ValueError, "z must be finite, got NaN or inf values"),
    Row("F.coding_rate(z, eps=1e-200)", ValueError, r"eps must lie in \[1e-15, 1e\+15\] .*got eps=1e-200 \(eps\*\*2 = 0\)"),
    Row("F.coding_rate(z, eps=1e-30)", ValueError, r"eps must lie in \[1e-15, 1e\+15\] .*\(eps\*\*2 = 1e-60\)"),
    Row("F.coding_rate(z, eps=1e200)", ValueError, r"eps must lie in \[1e-15, 1e\+15\] .*\(eps\*\*2 = inf\)"),
    Row("F.coding_rate(z, eps_sq=1e40)", ValueError, r"eps_sq must lie in \[1e-30, 1e\+30\] .*got eps_sq=1e\+40"),
    Row("F.coding_rate(z, eps_sq=0.0)", ValueError, r"eps_sq must be a finite number > 0, got 0\.0"),
    Row("F.coding_rate(z, eps=0.5, eps_sq=0.25)", ValueError, r"give either eps \(ε\) or eps_sq \(ε²\), not both"),
    Row("F.coding_rate(z, eps=True)", TypeError, "eps must be a positive number, got bool"),
    Row('F.coding_rate(z, eps="0.5")', TypeError, "eps must be a positive number, got str"),
    Row('F.coding_rate(z, eps=float("nan"))', ValueError, "eps must be a finite number > 0, got nan"),
    Row('F.coding_rate(z, variant="paper")', ValueError, "variant must be one of 'standard', 'acl_official', got 'paper'"),
    Row("F.coding_rate(z, mask=torch.ones(5, dtype=torch.bool))", ValueError, r"mask must be a bool tensor of shape \(6,\)"),
    Row("F.coding_rate_reduction(z, labels.float())", TypeError, r"labels must have an integer dtype, got torch\.float32"),
    Row("F.coding_rate_reduction(z, labels[:5])", ValueError, r"labels must have shape \(6,\) to match the embeddings, got \(5,\)"),
    Row("F.coding_rate_reduction(z, labels, num_classes=2)", ValueError, r"labels must lie in \[0, num_classes=2\)"),
    Row("F.coding_rate_reduction(z, labels, num_classes=0)", ValueError, "num_classes must be an int >= 1, got 0"),
    Row("F.coding_rate_reduction(z_inf, labels)", ValueError, "z must be finite, got NaN or inf values"),
    Row("F.half_logdet_gram(z, -1.0)", ValueError, r"a must be a finite number >= 0, got -1\.0"),
    Row('F.half_logdet_gram(z, float("inf"))', ValueError, "a must be a finite number >= 0, got inf"),
    Row("F.effective_rank(z_nan)", ValueError, r"z must be finite, got NaN or inf values \(first in row 2\)"),
    Row("F.rho_spectrum(z_inf)", ValueError, r"z must be finite, got NaN or inf values \(first in row 2\)"),
    Row("F.singular_value_spectrum(z_nan)", ValueError, r"z must be finite, got NaN or inf values \(first in row 2\)"),
    Row('F.singular_value_spectrum(z, normalize="yes")', TypeError, r"normalize must be a bool \(True or False\), got str 'yes'"),
    Row("F.singular_value_spectrum(torch.full((2, 2), 3e38), normalize=False)", ValueError, r"z's singular values must be finite in torch\.float32, got an overflow"),
    Row("F.effective_rank(torch.zeros(3))", ValueError, r"z must have shape \(batch_size, dim\), got \(3,\)"),
    Row("F.intra_inter_distance_ratio(z_nan, labels)", ValueError, r"z must be finite, got NaN or inf values \(first in row 2\)"),
    Row("F.intra_inter_distance_ratio(z, labels[:4])", ValueError, r"labels must have shape \(6,\) to match the embeddings, got \(4,\)"),
    Row("F.intra_inter_distance_ratio(z, None)", ValueError, "labels are required, got None"),
    Row("F.intra_inter_distance_ratio(z, labels, normalize=1)", TypeError, r"normalize must be a bool \(True or False\), got int 1"),
    Row("F.ranked_list_loss(z_nan, labels)", ValueError, r"embeddings must be finite, got NaN or inf values \(first in row 2\)"),
    Row("F.ranked_list_loss(z, labels, z_inf, labels)", ValueError, r"ref_emb must be finite, got NaN or inf values \(first in row 2\)"),
    Row("F.ranked_list_loss(z, labels, torch.randn(5, 3), labels[:5])", ValueError, "ref_emb must have dim 4 like the embeddings, got 3"),
    Row("F.ranked_list_loss(z, labels, z)", ValueError, "ref_emb and ref_labels must be given together, got ref_emb=a tensor, ref_labels=None"),
    Row("F.ranked_list_loss(z, labels, ref_labels=labels)", ValueError, "ref_emb and ref_labels must be given together, got ref_emb=None, ref_labels=a tensor"),
    Row('F.ranked_list_loss(z, labels, z.to("meta"), labels)', ValueError, r"ref_emb must be on the embeddings' device \(cpu\), got meta"),
    Row("F.ranked_list_loss(z, labels, z, labels.float())", TypeError, r"ref_labels must have an integer dtype, got torch\.float32"),
    Row("F.ranked_list_loss(z, labels, margin=0.5, alpha=0.4)", ValueError, r"alpha must be greater than margin \(0\.5\), got 0\.4"),
    Row("F.ranked_list_loss(z, labels, Tn=-1.0)", ValueError, r"Tn must be a finite number >= 0, got -1\.0"),
    Row('F.ranked_list_loss(z, labels, lam=float("inf"))', ValueError, "lam must be a finite number >= 0, got inf"),
    Row("F.ranked_list_loss(z, labels, margin=True)", TypeError, "margin must be a positive number, got bool"),
    Row('F.ranked_list_loss(z, labels, normalize="no")', TypeError, r"normalize must be a bool \(True or False\), got str 'no'"),
    Row("F.ranked_list_loss(z, labels, query_grad_only=None)", TypeError, r"query_grad_only must be a bool \(True or False\), got NoneType"),
    Row("RankedListLoss()(z_nan, labels)", ValueError, r"embeddings must be finite, got NaN or inf values \(first in row 2\)"),
    Row("RankedListLoss()(z, labels, ref_emb=z_nan, ref_labels=labels)", ValueError, r"ref_emb must be finite, got NaN or inf values \(first in row 2\)"),
    Row("RankedListLoss()(z, labels, (labels, labels, labels))", ValueError, "indices_tuple is not supported by RankedListLoss, which uses every pair"),
    Row("RankedListLoss()(z)", ValueError, "labels are required, got None"),
    Row('RankedListLoss()(z, labels, ref_emb=z.to("meta"), ref_labels=labels)', ValueError, r"ref_emb must be on the embeddings' device \(cpu\), got meta"),
    Row('RankedListLoss(detach_weights="False")', TypeError, r"detach_weights must be a bool \(True or False\), got str 'False'"),
    Row('RankedListLoss(check="yes")', TypeError, r"check must be a bool \(True or False\), got str 'yes'"),
    Row('RankedListLoss(Tp=float("nan"))', ValueError, "Tp must be a finite number >= 0, got nan"),
    Row("RankedListLoss(distance=CosineSimilarity())", ValueError, r"distance must be a distance, not a similarity \(is_inverted=True\)"),
    Row("RankedListLoss(distance=LpDistance(p=1))", ValueError, r"distance must be LpDistance\(p=2, power=1\), got LpDistance\(p=1"),
    Row("CrossBatchMemory(RankedListLoss(), 4, memory_size=8)", Exception, "CrossBatchMemory not supported for RankedListLoss"),
    Row("EasyPositiveMiner()(z_nan, labels)", ValueError, r"embeddings must be finite, got NaN or inf values \(first in row 2\)"),
    Row("EasyPositiveMiner()(z, labels, z_inf, labels)", ValueError, r"ref_emb must be finite, got NaN or inf values \(first in row 2\)"),
    Row("EasyPositiveMiner()(z, labels, z.double(), labels)", TypeError, r"ref_emb must have the embeddings' dtype \(torch\.float32\), got torch\.float64"),
    Row('EasyPositiveMiner()(z, labels, z.to("meta"), labels)', ValueError, r"ref_emb must be on the embeddings' device \(cpu\), got meta"),
    Row("EasyPositiveMiner()(z, labels, z)", ValueError, "ref_emb and ref_labels must be given together"),
    Row("EasyPositiveMiner()(z, labels[:5])", ValueError, r"labels must have shape \(6,\) to match the embeddings, got \(5,\)"),
    Row("EasyPositiveMiner(distance=LpDistance(normalize_embeddings=False))(torch.tensor([[3e38, 0.0], [-3e38, 0.0]]), labels[:2])", ValueError, "the distances between embeddings and ref_emb must be finite"),
    Row('EasyPositiveMiner(neg_strategy="random")', ValueError, "neg_strategy must be one of 'semihard', 'hard', 'distance_weighted', 'all', got 'random'"),
    Row("EasyPositiveMiner(semihard_fallback=None)", ValueError, "semihard_fallback must be one of 'hard', 'skip', got None"),
    Row("EasyPositiveMiner(min_pos_distance=-1)", ValueError, "min_pos_distance must be a finite number >= 0, got -1"),
    Row("EasyPositiveMiner(cutoff=1.0, nonzero_loss_cutoff=0.5)", ValueError, r"nonzero_loss_cutoff must be greater than cutoff \(1\.0\), got 0\.5"),
    Row("EasyPositiveMiner(generator=0)", TypeError, r"generator must be a torch\.Generator or None, got int"),
    Row("EasyPositiveMiner(check=1)", TypeError, r"check must be a bool \(True or False\), got int 1"),
    Row('EasyPositiveMiner(neg_strategy="distance_weighted", distance=CosineSimilarity())', ValueError, r"neg_strategy='distance_weighted' needs distance=LpDistance\(p=2, power=1, normalize_embeddings=True\)"),
    Row("CodingRateRegularizer()(z_nan)", ValueError, "z must be finite, got NaN or inf values"),
    Row("CodingRateRegularizer(eps=1e-200)", ValueError, r"eps must lie in \[1e-15, 1e\+15\]"),
    Row('CodingRateRegularizer(form="log")', ValueError, "form must be one of 'neg', 'exp', got 'log'"),
    Row('CodingRateRegularizer(gamma="1")', TypeError, "gamma must be a positive number, got str"),
    Row("MCR2Loss()(z_nan, labels)", ValueError, "z must be finite, got NaN or inf values"),
    Row("MCR2Loss(eps_sq=1e-40)", ValueError, r"eps_sq must lie in \[1e-30, 1e\+30\]"),
    Row("MCR2Loss()(z, labels.float())", TypeError, r"labels must have an integer dtype, got torch\.float32"),
    Row("AntiCollapseLoss(torch.nn.MSELoss())", TypeError, "loss must be a pytorch_metric_learning BaseMetricLossFunction, got MSELoss"),
    Row("AntiCollapseLoss(ContrastiveLoss(), ac_weight=-1)", ValueError, "ac_weight must be a finite number >= 0, got -1"),
    Row("AntiCollapseLoss(ContrastiveLoss(), eps=1e-200)", ValueError, r"eps must lie in \[1e-15, 1e\+15\]"),
    Row('AntiCollapseLoss(ContrastiveLoss(), target="all")', ValueError, "target must be one of 'embeddings', 'proxies', 'both', got 'all'"),
    Row("AntiCollapseLoss(ContrastiveLoss())(z_nan, labels)", ValueError, "z must be finite, got NaN or inf values"),
    Row("F.ranked_list_loss(torch.tensor([[1e308], [-1e308]], dtype=torch.float64), labels[:2], normalize=False)", ValueError, "the distances between embeddings and ref_emb must be finite in float64, got an overflow"),
    Row("RankedListLoss(distance=LpDistance(normalize_embeddings=False))(torch.tensor([[1e308], [-1e308]], dtype=torch.float64), labels[:2])", ValueError, "the distances between embeddings and ref_emb must be finite in float64"),
    Row("MCR2Loss()(z, labels, (labels, labels, labels))", ValueError, "indices_tuple is not supported by MCR2Loss", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-indices-tuple]'),
    Row('MCR2Loss()(z, labels, ref_emb=z.to("meta"), ref_labels=labels)', ValueError, r"ref_emb must be on the embeddings' device \(cpu\), got meta"),
    Row("MCR2Loss()(z, labels, ref_emb=torch.randn(3, 5), ref_labels=labels[:3])", ValueError, "ref_emb must have dim 4 like the embeddings, got 5"),
    Row("MCR2Loss(num_classes=0)", ValueError, "num_classes must be an int >= 1, got 0", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-num-classes-0]'),
    Row("CrossBatchMemory(MCR2Loss(), 4, memory_size=8)", Exception, "CrossBatchMemory not supported for MCR2Loss", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-in-cross-batch-memory]'),
    Row('CodingRateRegularizer(normalize="False")', TypeError, r"normalize must be a bool \(True or False\), got str 'False'"),
    Row('CodingRateRegularizer(check="x")', TypeError, r"check must be a bool \(True or False\), got str 'x'"),
    Row("AntiCollapseLoss(ContrastiveLoss(), normalize=1)", TypeError, r"normalize must be a bool \(True or False\), got int 1"),
    Row('AntiCollapseLoss(ContrastiveLoss(), target="proxies")', TypeError, r"loss must be a PML proxy loss \(with a 'proxies', 'W' or 'fc' parameter\)", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-proxies-of-pair-loss]'),
    Row("UniformityRegularizer()(z_nan)", ValueError, r"z must be finite, got NaN or inf values \(first in row 2\)"),
    Row('UniformityRegularizer(t="2")', TypeError, "t must be a positive number, got str"),
    Row('UniformityRegularizer(t=float("inf"))', ValueError, "t must be a finite number > 0, got inf"),
    Row("KoLeoRegularizer()(z_inf)", ValueError, r"z must be finite, got NaN or inf values \(first in row 2\)"),
    Row("KoLeoRegularizer(eps=-1)", ValueError, "eps must be a finite number > 0, got -1"),
    Row('KoLeoRegularizer(normalize="no")', TypeError, r"normalize must be a bool \(True or False\), got str 'no'"),
    Row("F.uniformity([[1.0]])", TypeError, r"z must be a torch\.Tensor, got list"),
    Row("F.mean_log_nn_distance(z_nan)", ValueError, r"z must be finite, got NaN or inf values \(first in row 2\)"),
    Row('MCR2Loss(num_classes="3")', TypeError, "num_classes must be an int, got str '3'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-num-classes-str]'),
    Row("MCR2Loss(num_classes=2.0)", TypeError, r"num_classes must be an int, got float 2\.0", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-num-classes-float]'),
    Row('MCR2Loss(normalize="False")', TypeError, r"normalize must be a bool \(True or False\), got str 'False'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-normalize-str]'),
    Row("MCR2Loss(check=1)", TypeError, r"check must be a bool \(True or False\), got int 1", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-check-int]'),
    Row('MCR2Loss(distributed="all")', ValueError, "distributed must be one of 'global', 'local', got 'all'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-distributed]'),
    Row("MCR2Loss()(torch.zeros(6, 2, 2), labels)", ValueError, r"embeddings must have shape \(batch_size, dim\), got \(6, 2, 2\)", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-3d]'),
    Row("MCR2Loss()(z.long(), labels)", TypeError, r"embeddings must have a floating-point dtype .*got torch\.int64", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-int-embeddings]'),
    Row("MCR2Loss()(z)", ValueError, "labels are required, got None", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-no-labels]'),
    Row("MCR2Loss()(z, labels, None, torch.randn(5, 3), labels[:5])", ValueError, "ref_emb must have dim 4 like the embeddings, got 3", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-ref-dim]'),
    Row("MCR2Loss()(z, labels, None, z.double(), labels)", TypeError, r"ref_emb must have the embeddings' dtype \(torch\.float32\), got torch\.float64", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-ref-dtype]'),
    Row('MCR2Loss()(z, labels, None, z.to("meta"), labels)', ValueError, r"ref_emb must be on the embeddings' device \(cpu\), got meta", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-ref-device]'),
    Row("MCR2Loss()(z, labels, None, z + 1)", ValueError, "ref_emb and ref_labels must be given together, got ref_emb=a tensor, ref_labels=None", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-ref-no-labels]'),
    Row("MCR2Loss()(z, labels, None, z + 1, labels.float())", TypeError, r"ref_labels must have an integer dtype, got torch\.float32", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[mcr2-ref-labels-float]'),
    Row("CrossBatchMemory(AntiCollapseLoss(ContrastiveLoss()), 4, memory_size=8)", Exception, "CrossBatchMemory not supported for AntiCollapseLoss", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-in-cross-batch-memory]'),
    Row("AntiCollapseLoss(CrossBatchMemory(ContrastiveLoss(), 4, memory_size=8))", TypeError, "loss must be a pytorch_metric_learning BaseMetricLossFunction, got CrossBatchMemory, which AntiCollapseLoss cannot wrap", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-wraps-cross-batch-memory]'),
    Row('AntiCollapseLoss(ContrastiveLoss(), normalize="yes")', TypeError, r"normalize must be a bool \(True or False\), got str 'yes'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-normalize-str]'),
    Row('AntiCollapseLoss(ContrastiveLoss(), check="no")', TypeError, r"check must be a bool \(True or False\), got str 'no'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-check-str]'),
    Row('AntiCollapseLoss(ContrastiveLoss(), loss_weight="1")', TypeError, "loss_weight must be a non-negative number, got str", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-loss-weight-str]'),
    Row('AntiCollapseLoss(ContrastiveLoss(), form="exp", gamma=0)', ValueError, "gamma must be a finite number > 0, got 0", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-gamma-zero]'),
    Row("AntiCollapseLoss(ContrastiveLoss())(torch.zeros(6, 2, 2), labels)", ValueError, r"embeddings must have shape \(batch_size, dim\), got \(6, 2, 2\)", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-3d]'),
    Row("AntiCollapseLoss(ContrastiveLoss())(z, labels[:5])", ValueError, r"labels must have shape \(6,\) to match the embeddings, got \(5,\)", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-labels-short]'),
    Row("AntiCollapseLoss(ContrastiveLoss())(z, labels, None, torch.randn(5, 3), labels[:5])", ValueError, "ref_emb must have dim 4 like the embeddings, got 3", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-ref-dim]'),
    Row('AntiCollapseLoss(ContrastiveLoss())(z, labels, None, z.to("meta"), labels)', ValueError, r"ref_emb must be on the embeddings' device \(cpu\), got meta", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-ref-device]'),
    Row("AntiCollapseLoss(ContrastiveLoss())(z, labels, None, z + 1)", ValueError, "ref_emb and ref_labels must be given together", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-ref-no-labels]'),
    Row("AntiCollapseLoss(ContrastiveLoss())(z, labels, None, z_nan, labels)", ValueError, r"ref_emb must be finite, got NaN or inf values \(first in row 2\)", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-ref-nan]'),
    Row('AntiCollapseLoss(ProxyAnchorLoss(3, 4), target="proxies")(z_nan, labels)', ValueError, r"embeddings must be finite, got NaN or inf values \(first in row 2\)", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-proxies-nan]'),
    Row('AntiCollapseLoss(ProxyAnchorLoss(3, 4), target="proxies")(z)', ValueError, "labels are required, got None", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-proxies-no-labels]'),
    Row('AntiCollapseLoss(ProxyAnchorLoss(3, 4), target="proxies")(z, labels.float())', TypeError, r"labels must have an integer dtype, got torch\.float32", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[acl-proxies-float-labels]'),
    Row('CodingRateRegularizer(normalize="yes")', TypeError, r"normalize must be a bool \(True or False\), got str 'yes'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[reg-normalize-str]'),
    Row('CodingRateRegularizer(check="no")', TypeError, r"check must be a bool \(True or False\), got str 'no'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[reg-check-str]'),
    Row('CodingRateRegularizer(variant="paper")', ValueError, "variant must be one of 'standard', 'acl_official', got 'paper'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[reg-variant]'),
    Row("CodingRateRegularizer(distributed=True)", ValueError, "distributed must be one of 'global', 'local', got True", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[reg-distributed]'),
    Row("CodingRateRegularizer(eps=0.5, eps_sq=0.25)", ValueError, r"give either eps \(ε\) or eps_sq \(ε²\), not both", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[reg-eps-and-eps-sq]'),
    Row("CodingRateRegularizer()(torch.zeros(6, 2, 2))", ValueError, r"z must have shape \(batch_size, dim\), got \(6, 2, 2\)", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[reg-3d]'),
    Row("CodingRateRegularizer()(z_inf)", ValueError, "z must be finite", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[reg-inf]'),
    Row('F.rate_penalty(torch.tensor(1.0), "log")', ValueError, "form must be one of 'neg', 'exp', got 'log'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[penalty-form]'),
    Row('F.rate_penalty(torch.tensor(1.0), "exp", gamma=-1.0)', ValueError, r"gamma must be a finite number > 0, got -1\.0", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[penalty-gamma]'),
    Row('D.running_in("DDP").__enter__()', ValueError, "kind must be one of 'wrapper', 'wrapper-efficient', 'ddp', got 'DDP'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[running-in-kind]'),
    Row('D.running_in("ddp", user_ref="yes").__enter__()', TypeError, r"user_ref must be a bool \(True or False\), got str 'yes'", 'tests/losses/test_anti_collapse_loss.py::TestBadInputRows::test_row[running-in-user-ref]'),
    Row('F.coding_rate(z, normalize="False")', TypeError, r"normalize must be a bool \(True or False\), got str 'False'"),
    Row('F.coding_rate(z, check="no")', TypeError, r"check must be a bool \(True or False\), got str 'no'"),
    Row("F.coding_rate_reduction(z, labels, normalize=1)", TypeError, r"normalize must be a bool \(True or False\), got int 1"),
    Row("F.half_logdet_gram(z, 1.0, check=0)", TypeError, r"check must be a bool \(True or False\), got int 0"),
    Row("F.coding_rate(torch.tensor([[1e30, 1.0]]), normalize=False)", ValueError, r"z is too large for torch\.float32 with normalize=False"),
    Row('F.coding_rate(z, compute_dtype="float64")', TypeError, r"compute_dtype must be None, torch\.float32 or torch\.float64, got str 'float64'"),
    Row("F.coding_rate_reduction(z, labels, compute_dtype=torch.float16)", TypeError, r"compute_dtype must be None, torch\.float32 or torch\.float64, got dtype torch\.float16"),
    Row("CodingRateRegularizer(compute_dtype=torch.int64)", TypeError, r"compute_dtype must be None, torch\.float32 or torch\.float64, got dtype torch\.int64"),
    Row("MCR2Loss(compute_dtype=64)", TypeError, r"compute_dtype must be None, torch\.float32 or torch\.float64, got int 64"),
    Row("F.half_logdet_gram(z, torch.tensor(-1.0))", ValueError, r"a must be finite and >= 0 in every entry, got -1\.0"),
    Row("F.half_logdet_gram(z, torch.tensor(-1.0), check=False)", ValueError, r"a must be finite and >= 0 in every entry, got -1\.0"),
    Row('F.half_logdet_gram(z, torch.tensor(float("nan")))', ValueError, "a must be finite and >= 0 in every entry, got nan"),
    Row("F.half_logdet_gram(torch.stack([z, z]), torch.tensor([1.0, -2.0]))", ValueError, r"a must be finite and >= 0 in every entry, got -2\.0"),
    Row("F.half_logdet_gram(z, torch.tensor([1.0, 2.0]))", ValueError, r"a must be a number or a tensor broadcastable to the batch shape \(\), got a tensor of shape \(2,\)"),
    Row("F.half_logdet_gram(z, torch.tensor(True))", TypeError, r"a must be a real number or a real tensor, got a tensor of torch\.bool"),
    Row("F.half_logdet_gram(z, 1 + 0j)", TypeError, "a must be a finite number >= 0 or a tensor of the batch shape, got complex"),
    Row("F.half_logdet_gram(z, True)", TypeError, "a must be a finite number >= 0 or a tensor of the batch shape, got bool True"),
    Row("F.half_logdet_gram(z[0], 1.0)", ValueError, r"x must have shape \(\.\.\., n, k\), got \(4,\)"),
    Row("F.half_logdet_gram(labels.view(3, 2), 1.0)", TypeError, r"x must have a floating-point dtype .*got torch\.int64"),
    Row("F.coding_rate(z, eps=torch.tensor(0.5))", TypeError, "eps must be a positive number, got Tensor"),
    Row("F.coding_rate(z, eps_sq=torch.tensor(-0.5))", TypeError, "eps_sq must be a positive number, got Tensor"),
    Row("F.coding_rate_reduction(z, labels, num_classes=torch.tensor(3))", TypeError, "num_classes must be an int, got Tensor"),
    Row("F.uniformity(z, t=torch.tensor(-2.0))", TypeError, "t must be a positive number, got Tensor"),
    Row('F.rate_penalty(torch.tensor(1.0), "exp", gamma=torch.tensor(-1.0))', TypeError, "gamma must be a positive number, got Tensor"),
    Row("F.ranked_list_loss_parts(z, labels, margin=torch.tensor(0.4))", TypeError, "margin must be a positive number, got Tensor"),
    Row("F.easy_positive_triplets(z, labels, distances=torch.zeros(3, 3))", ValueError, r"distances must have shape \(6, 6\) \(embeddings × reference set\), got \(3, 3\)"),
    Row("F.easy_positive_triplets(z, labels, similarity=True)", ValueError, "similarity=True needs a distances matrix, got distances=None"),
    Row("F.easy_positive_triplets(z, labels, min_pos_distance=torch.tensor(0.01))", TypeError, "min_pos_distance must be a non-negative number, got Tensor"),
    Row("CodingRateRegularizer(eps_sq=torch.tensor(0.5))", TypeError, "eps_sq must be a positive number, got Tensor"),
    Row("MCR2Loss(eps_sq=torch.tensor(0.5))", TypeError, "eps_sq must be a positive number, got Tensor"),
    Row("RankedListLoss(margin=torch.tensor(0.4))", TypeError, "margin must be a positive number, got Tensor"),
    Row("EasyPositiveMiner(min_pos_distance=torch.tensor(0.01))", TypeError, "min_pos_distance must be a non-negative number, got Tensor"),
    Row("UniformityRegularizer(t=torch.tensor(2.0))", TypeError, "t must be a positive number, got Tensor"),
    Row("KoLeoRegularizer(eps=torch.tensor(1e-8))", TypeError, "eps must be a positive number, got Tensor"),
    Row("AntiCollapseLoss(ContrastiveLoss(), ac_weight=torch.tensor(1.0))", TypeError, "ac_weight must be a non-negative number, got Tensor"),
    Row("AntiCollapseLoss(ContrastiveLoss())(z.bfloat16(), labels)", TypeError, r"embeddings of dtype torch\.bfloat16 are not supported by the wrapped ContrastiveLoss on cpu"),
]


def namespace() -> dict:
    """The names a row's call may use (described by ``NAMESPACE_DOC``)."""
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    z_nan, z_inf = z.clone(), z.clone()
    z_nan[2, 1] = float("nan")
    z_inf[2, 0] = float("inf")
    classes = {k: getattr(pml_anticollapse, k) for k in pml_anticollapse.__all__ if k[0].isupper()}
    return dict(
        torch=torch,
        F=functional,
        D=distributed,
        z=z,
        labels=torch.tensor([0, 0, 1, 1, 2, 2]),
        z_nan=z_nan,
        z_inf=z_inf,
        CosineSimilarity=CosineSimilarity,
        LpDistance=LpDistance,
        ContrastiveLoss=ContrastiveLoss,
        CrossBatchMemory=CrossBatchMemory,
        ProxyAnchorLoss=ProxyAnchorLoss,
        **classes,
    )


def _cell(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


def markdown_table() -> str:
    """``NAMESPACE_DOC`` and the rows as a Markdown table (``| # | call | raises | message
    (regex) | also tested by |``), numbered in list order."""
    lines = [NAMESPACE_DOC, "", "| # | call | raises | message (regex) | also tested by |",
             "|---|---|---|---|---|"]
    for n, row in enumerate(ROWS, 1):
        also = _cell(row.also) if row.also else ""
        lines.append(f"| {n} | {_cell(row.call)} | `{row.error.__name__}` | "
                     f"{_cell(row.pattern)} | {also} |")
    return "\n".join(lines) + "\n"


class TestList:
    def test_rows_are_distinct(self):
        assert len(ROWS) >= 170
        assert len({row.call for row in ROWS}) == len(ROWS)

    def test_the_other_tests_named_exist(self):
        for n, row in enumerate(ROWS, 1):
            if row.also is None:
                continue
            path, _, name = row.also.partition("::")
            assert (ROOT / path).is_file(), f"row {n}: {path}"
            param = name.rpartition("[")[2].rstrip("]")
            assert param in (ROOT / path).read_text(encoding="utf-8"), f"row {n}: {row.also}"

    def test_only_pml_raises_a_bare_exception(self):
        for row in ROWS:
            assert row.error in (ValueError, TypeError, Exception)
            if row.error is Exception:
                assert row.call.startswith("CrossBatchMemory("), row.call

    def test_the_table_renders_every_row(self):
        table = markdown_table()
        body = [ln for ln in table.splitlines() if re.match(r"^\| \d+ \|", ln)]
        assert len(body) == len(ROWS)
        for n, (line, row) in enumerate(zip(body, ROWS, strict=True), 1):
            assert line.startswith(f"| {n} | `{row.call}` | `{row.error.__name__}` |"), line


@pytest.mark.parametrize("row", ROWS, ids=[f"row{n}" for n in range(1, len(ROWS) + 1)])
def test_row(row: Row):
    with pytest.raises(row.error) as info:
        eval(row.call, namespace())  # the list's own rows
    assert type(info.value) is row.error, f"{row.call}: {type(info.value).__name__}: {info.value}"
    assert re.match(row.pattern, str(info.value)), f"{row.call}: message {str(info.value)!r}"


class TestChecksOffered:
    """The checks in functional/_checks.py that other modules may call, tested directly."""

    def test_gram_scale_refuses_an_overflowing_gram_matrix(self):
        from pml_anticollapse.functional._checks import check_gram_scale

        z = torch.tensor([[1e30, 0.0], [0.0, 1.0]])
        # a·‖z_0‖²·k·min(n, k) = 1·1e60·2·2 is beyond float32's 3.4e38, within float64's range
        with pytest.raises(ValueError, match=r"z is too large for torch\.float32 with normalize"):
            check_gram_scale(z, 1.0)
        check_gram_scale(z.double(), 1.0)
        check_gram_scale(z, 1.0, normalize=True)  # unit rows: a·2 is fine
        with pytest.raises(ValueError, match=r"z is too large for torch\.float32"):
            check_gram_scale(z, torch.tensor([2e38, 1.0]), normalize=True)

    @pytest.mark.parametrize("scale", [1e30, 1e-30, 1e-40, 5e37])
    def test_rescale_rows_keeps_directions(self, scale):
        from pml_anticollapse.functional._checks import rescale_rows

        z = torch.randn(5, 3, dtype=torch.float64)
        x = rescale_rows((z * scale).float())
        assert bool(torch.isfinite(x).all()) and bool((x.abs().amax(1) >= 1).all())
        got = torch.nn.functional.normalize(x, dim=1)
        want = torch.nn.functional.normalize((z * scale).float().double() / scale, dim=1)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("value,exc,match", [
        (10**400, ValueError, "margin must be a finite number > 0"),
        (True, TypeError, "margin must be a positive number, got bool"),
        (torch.tensor(0.4), TypeError, "margin must be a positive number, got Tensor"),
    ])
    def test_numbers(self, value, exc, match):
        from pml_anticollapse.functional._checks import check_positive

        with pytest.raises(exc, match=match):
            check_positive(value, "margin")


if __name__ == "__main__":
    print(markdown_table(), end="")
