"""Runs every row of the README's bad-input table, so that the table and the code cannot drift.

The table lives between ``<!-- bad-inputs:start -->`` and ``<!-- bad-inputs:end -->``; each row is
``| n | `call` | `ErrorType` | `message regex` | `also tested by` |`` (the last cell may be empty).
The call is evaluated in a fresh namespace (the one the paragraph above the table describes) and
must raise exactly that type, with a message matching the regex from its start.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.losses import ContrastiveLoss, CrossBatchMemory, ProxyAnchorLoss

import pml_anticollapse
from pml_anticollapse import distributed, functional

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(
    r"^\|\s*(\d+)\s*\|\s*`(.+?)`\s*\|\s*`(\w+)`\s*\|\s*`(.+?)`\s*\|\s*(?:`([^`]+)`)?\s*\|\s*$"
)
ERRORS = {"ValueError": ValueError, "TypeError": TypeError, "Exception": Exception}


def _section() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"
    assert text.count(start) == 1 and text.count(end) == 1, "bad-input markers missing"
    return text.split(start, 1)[1].split(end, 1)[0].splitlines()


def _parsed() -> list[tuple[int, str, str, str, str | None]]:
    rows = []
    for line in _section():
        m = ROW.match(line)
        if m:
            rows.append((int(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5)))
    return rows


PARSED = _parsed()
ROWS = [row[:4] for row in PARSED]


def _namespace() -> dict:
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


class TestTable:
    def test_every_table_line_is_a_row(self):
        # a row the pattern does not read would silently go untested
        lines = [ln for ln in _section() if ln.startswith("|") and not ln.startswith("|---")]
        assert len(lines) - 1 == len(ROWS)  # minus the header

    def test_rows_are_numbered_and_distinct(self):
        assert len(ROWS) >= 40
        assert [n for n, *_ in ROWS] == list(range(1, len(ROWS) + 1))
        assert len({call for _, call, *_ in ROWS}) == len(ROWS)

    def test_the_other_tests_named_exist(self):
        root = README.parent
        for n, *_, test_id in PARSED:
            if test_id is None:
                continue
            path, _, name = test_id.partition("::")
            assert (root / path).is_file(), f"row {n}: {path}"
            param = name.rpartition("[")[2].rstrip("]")
            assert param in (root / path).read_text(encoding="utf-8"), f"row {n}: {test_id}"

    def test_only_pml_raises_a_bare_exception(self):
        for _, call, exc, _ in ROWS:
            assert exc in ERRORS
            if exc == "Exception":
                assert call.startswith("CrossBatchMemory("), call


@pytest.mark.parametrize("n,call,exc,pattern", ROWS, ids=[f"row{r[0]}" for r in ROWS])
def test_row(n, call, exc, pattern):
    with pytest.raises(ERRORS[exc]) as info:
        eval(call, _namespace())  # the README's own rows
    assert type(info.value) is ERRORS[exc], f"row {n}: {type(info.value).__name__}: {info.value}"
    assert re.match(pattern, str(info.value)), f"row {n}: message {str(info.value)!r}"


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
