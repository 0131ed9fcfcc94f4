"""The epoch-budget criterion (scripts/epoch_budget.py) on curves whose answer is known by hand."""

from __future__ import annotations

from scripts.epoch_budget import budget_table


def _cell(protocol, method, values):
    return {"protocol": protocol, "method": method,
            "curve": [{"epoch": 2 * (i + 1), "mean_average_precision_at_r": v}
                      for i, v in enumerate(values)]}


def test_first_epoch_where_every_plain_baseline_gains_less_than_the_threshold():
    rising = [0.1 * i for i in range(1, 16)]             # +0.5 per 10 epochs: never flat
    flat_from_16 = [min(0.1 * i, 0.8) for i in range(1, 16)]  # 0.8 from epoch 16 on
    results = [_cell(p, m, flat_from_16) for p in ("superclass_val0", "superclass_val1")
               for m in ("contrastive", "margin", "proxy_anchor")]
    results += [_cell(p, m, rising) for p in ("zs_fold0", "zs_fold1")
                for m in ("contrastive", "margin", "proxy_anchor")]
    text = budget_table(results, gain=0.01, window=10)
    # epoch 26: MAP@R(26) - MAP@R(16) = 0.8 - 0.8 = 0 < 0.01; epoch 24: 0.8 - 0.7 = 0.1
    assert "superclass (superclass_val0, superclass_val1): budget **26**" in text
    assert "zero_shot (zs_fold0, zs_fold1): budget **30** (criterion not met" in text


def test_the_budget_figure_is_drawn_from_the_same_curves(tmp_path):
    from scripts.epoch_budget import budget_figure, families

    flat_from_16 = [min(0.1 * i, 0.8) for i in range(1, 16)]
    results = [_cell(p, m, flat_from_16) for p in ("superclass_val0", "superclass_val1")
               for m in ("contrastive", "margin", "proxy_anchor")]
    (fam,) = families(results, gain=0.01, window=10)
    assert (fam["family"], fam["budget"], fam["met"]) == ("superclass", 26, True)
    assert fam["mean"]["margin"][16] == 0.8 and fam["forms"] == ["superclass_val0",
                                                                 "superclass_val1"]
    path = tmp_path / "budget.png"
    assert budget_figure(results, 0.01, 10, str(path)) and path.stat().st_size > 5000
    assert not budget_figure([], 0.01, 10, str(tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists()


def test_a_folder_without_results_is_a_clear_error(tmp_path, capsys):
    from scripts.epoch_budget import main

    assert main([str(tmp_path)]) == 2
    assert f"RUN_DIR {tmp_path} has no results.json" in capsys.readouterr().err
