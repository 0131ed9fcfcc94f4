"""A damaged file of a run folder is named and recovered from, never a traceback.

Damaged checkpoint: the cell resumes from the previous checkpoint (``ckpt.prev.pt``) or from
scratch, and ends with the result of an uninterrupted cell. Damaged committed result: moved aside
(``*.damaged``, kept) and computed again. Damaged ``run.json``: rebuilt. Damaged
``config_identity.json``: an error naming it (it pins the configuration: never guessed).
Checkpoints hold tensors and plain values only and are read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from benchmarks import _shared as _io
from benchmarks.harness import cli, train
from tests.benchmarks._util import digits_cell

pytestmark = pytest.mark.slow  # trains cells to damage and resume them

TRAINING = {"epochs": 3, "batch_size": 16, "m_per_class": 4, "iterations_per_epoch": 2,
            "log_freq": 1}
TRIPLET = {"name": "triplet", "loss": {"class": "TripletMarginLoss", "args": {"margin": 0.2}}}
CPU = torch.device("cpu")


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("seconds", "resumed_from_epoch")}


def _records(run_dir, method="triplet") -> dict:
    folder = os.path.join(run_dir, "records", "zs", method, "seed0")
    return {n: open(os.path.join(folder, n)).read() for n in sorted(os.listdir(folder))
            if n.endswith(".csv")}


@pytest.fixture(scope="module")
def triplet():
    """(config, protocol, method, uninterrupted result, its run folder)."""
    import tempfile

    cfg, protocol = digits_cell("damaged", TRAINING, [TRIPLET])
    ref_dir = tempfile.mkdtemp(prefix="damaged-ref-")
    ref = train.run_cell(cfg, ref_dir, protocol, cfg.methods[0], 0, CPU)
    return cfg, protocol, cfg.methods[0], ref, ref_dir


def _stopped(triplet, run_dir, epoch: int) -> str:
    """Train the cell in ``run_dir`` up to ``epoch``'s checkpoint; return the work folder."""
    cfg, protocol, method, _, _ = triplet
    with pytest.raises(train.CellInterrupted):
        train.run_cell(cfg, str(run_dir), protocol, method, 0, CPU, stop_after_epoch=epoch)
    return os.path.join(str(run_dir), "work", "zs", "triplet", "seed0")


def _truncate(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


class TestDamagedCheckpoint:
    def test_the_previous_checkpoint_is_kept_and_loads_with_weights_only(self, triplet, tmp_path):
        work = _stopped(triplet, tmp_path, 2)
        latest = torch.load(os.path.join(work, "ckpt.pt"), weights_only=True)
        prev = torch.load(os.path.join(work, "ckpt.prev.pt"), weights_only=True)
        assert (latest["epoch"], prev["epoch"]) == (2, 1)

        def leaves(obj):
            if isinstance(obj, dict):
                for v in obj.values():
                    yield from leaves(v)
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    yield from leaves(v)
            else:
                yield obj

        kinds = {type(x) for x in leaves(latest)}
        assert kinds <= {torch.Tensor, int, float, str, bool, type(None)}, kinds
        assert latest["rng"]["numpy"]["bit_generator"] == "MT19937"
        assert len(latest["rng"]["numpy"]["keys"]) == 624

    def test_a_truncated_latest_checkpoint_resumes_from_the_previous(self, triplet, tmp_path,
                                                                      capsys):
        *_, ref, ref_dir = triplet
        work = _stopped(triplet, tmp_path, 2)
        ckpt = os.path.join(work, "ckpt.pt")
        _truncate(ckpt)
        capsys.readouterr()
        cfg, protocol, method, *_ = triplet
        result = train.run_cell(cfg, str(tmp_path), protocol, method, 0, CPU)
        err = capsys.readouterr().err
        assert f"[benchmarks] damaged file {ckpt}: cannot be read (" in err
        assert f"(moved to {ckpt}.damaged); resuming from {work}/ckpt.prev.pt (epoch 1)" in err
        assert "Traceback" not in err
        assert result["resumed_from_epoch"] == 1
        assert _strip(result) == _strip(ref)
        assert _records(tmp_path) == _records(ref_dir)  # no epoch lost or logged twice
        assert not os.path.exists(work)  # committed: the work folder is gone

    def test_both_checkpoints_damaged_restart_from_scratch(self, triplet, tmp_path, capsys):
        *_, ref, ref_dir = triplet
        work = _stopped(triplet, tmp_path, 2)
        for name in ("ckpt.pt", "ckpt.prev.pt"):
            with open(os.path.join(work, name), "wb") as f:
                f.write(b"\x00garbage")
        capsys.readouterr()
        cfg, protocol, method, *_ = triplet
        result = train.run_cell(cfg, str(tmp_path), protocol, method, 0, CPU)
        lines = [x for x in capsys.readouterr().err.splitlines() if "damaged file" in x]
        assert len(lines) == 2
        for line, name in zip(lines, ("ckpt.pt", "ckpt.prev.pt"), strict=True):
            assert line.startswith(f"[benchmarks] damaged file {work}/{name}: cannot be read")
            assert line.endswith("; restarting the cell from scratch")
        assert result["resumed_from_epoch"] is None
        assert _strip(result) == _strip(ref)
        assert _records(tmp_path) == _records(ref_dir)

    def test_a_pickle_that_needs_weights_only_false_is_refused(self, triplet, tmp_path, capsys):
        """A checkpoint holding a numpy array loads only with ``weights_only=False``: the harness
        reads with ``weights_only=True``, so it is damaged (and nothing in it is executed)."""
        work = _stopped(triplet, tmp_path, 1)
        ckpt = os.path.join(work, "ckpt.pt")
        state = torch.load(ckpt, weights_only=True)
        state["sampler_labels"] = np.arange(5)
        torch.save(state, ckpt)
        assert torch.load(ckpt, weights_only=False)["epoch"] == 1  # readable the unsafe way
        with pytest.raises(_io.DamagedFileError, match=r"damaged file .*ckpt\.pt: cannot be "
                           r"read \(UnpicklingError: Weights only load failed"):
            train.load_checkpoint(ckpt)
        capsys.readouterr()
        cfg, protocol, method, ref, _ = triplet
        result = train.run_cell(cfg, str(tmp_path), protocol, method, 0, CPU)
        assert "restarting the cell from scratch" in capsys.readouterr().err
        assert _strip(result) == _strip(ref)

    def test_a_loadable_file_that_is_not_a_checkpoint(self, tmp_path):
        path = str(tmp_path / "ckpt.pt")
        torch.save({"epoch": 1, "trunk": {}}, path)
        with pytest.raises(_io.DamagedFileError, match=r"not a checkpoint \(missing \['embedder'"):
            train.load_checkpoint(path)
        torch.save([1, 2], path)
        with pytest.raises(_io.DamagedFileError, match="not a checkpoint"):
            train.load_checkpoint(path)

    def test_a_state_that_weights_only_cannot_read_is_refused_when_written(self):
        with pytest.raises(TypeError, match=r"checkpoint\['records'\]\['x'\] holds a "
                           r"builtins.object, which torch.load\(weights_only=True\) cannot read"):
            train.plain({"records": {"x": object()}})
        assert train.plain({"a": np.float32(0.5), "b": (np.int64(3),)}) == {"a": 0.5, "b": (3,)}


class TestDamagedCommittedResult:
    @pytest.mark.parametrize(
        "content, reason",
        [
            (None, "not valid JSON"),  # truncated
            (b"\xff\x00 garbage", "not valid JSON"),
            (b"", "empty file"),
            (b"{}", r"protocol/method/seed are \[None, None, None\], expected \['zs', "
                    r"'floor', 0\]"),
            (b"[1, 2]", "not a JSON object but list"),
            (b'{"protocol": "zs", "method": "floor", "seed": 0, "metrics": {}}',
             "no metrics.mean_average_precision_at_r"),
        ],
    )
    def test_it_is_moved_aside_and_computed_again(self, tmp_path, capsys, content, reason):
        cfg, protocol = digits_cell("damaged-cell", {}, [{"name": "floor", "no_learning": True}])
        method = cfg.methods[0]
        first = train.run_cell(cfg, str(tmp_path), protocol, method, 0, CPU)
        path = train.cell_paths(str(tmp_path), "zs", "floor", 0)["result"]
        if content is None:
            _truncate(path)
        else:
            with open(path, "wb") as f:
                f.write(content)
        with open(path, "rb") as f:
            damaged = f.read()
        assert not train.is_committed(str(tmp_path), "zs", "floor", 0)
        capsys.readouterr()
        again = train.run_cell(cfg, str(tmp_path), protocol, method, 0, CPU)
        err = capsys.readouterr().err
        assert _strip(again) == _strip(first)
        import re

        assert re.search(rf"\[benchmarks\] damaged file {re.escape(path)}: {reason}", err), err
        assert f"(moved to {path}.damaged); computing the cell again" in err
        with open(path + ".damaged", "rb") as f:
            assert f.read() == damaged  # kept, not deleted
        assert _strip(_io.read_json(path)) == _strip(first)
        assert train.is_committed(str(tmp_path), "zs", "floor", 0)


TINY = (
    "name: damaged-cli\nseeds: [0]\nthreads: 1\n"
    "dataset: {name: digits, protocols: {zs: {type: zero_shot,\n"
    "  train_classes: [0, 1], test_classes: [2, 3]}}}\n"
    "methods:\n  - {name: no_learning, no_learning: true}\n"
)


class TestDamagedRunFiles:
    @pytest.fixture
    def run(self, tmp_path):
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(TINY)
        out = tmp_path / "run"
        args = ["--config", str(cfg), "--output", str(out), "--progress", "none", "--no-plots"]
        assert cli.main(args) == 0
        return out, args

    def test_a_damaged_run_json_is_rebuilt(self, run, capsys):
        out, args = run
        table = (out / "table.md").read_text()
        path = out / "run.json"
        path.write_text(path.read_text()[:40])
        capsys.readouterr()
        assert cli.main(args) == 0
        err = capsys.readouterr().err
        assert f"[benchmarks] damaged file {path}: not valid JSON" in err
        assert "rebuilt from this session: the history of earlier sessions is lost" in err
        assert (out / "run.json.damaged").read_text().startswith("{")
        info = json.loads(path.read_text())
        assert len(info["sessions"]) == 1 and info["sessions"][0]["cells_computed"] == []
        new = (out / "table.md").read_text()
        assert new[new.index("### "):] == table[table.index("### "):]

    def test_a_run_json_without_sessions_is_rebuilt(self, run, capsys):
        out, args = run
        (out / "run.json").write_text('{"sessions": 5}')
        assert cli.main(args) == 0
        assert "not a run record (no list of sessions)" in capsys.readouterr().err

    def test_a_damaged_config_identity_is_an_error_naming_it(self, run):
        out, args = run
        ident = out / "config_identity.json"
        ident.write_text('{"name": "dama')
        before = sorted(p.name for p in out.rglob("*"))
        with pytest.raises(ValueError, match=rf"damaged file {ident}: not valid JSON .*It pins "
                           r"the configuration of the run .* so it is not guessed: restore it "
                           r"from a backup, or pass --fresh \(deletes the run\) or another "
                           r"--output"):
            cli.main(args)
        assert os.path.realpath(out) not in _io.held_locks()  # released on the error too
        assert sorted(p.name for p in out.rglob("*")) == before
        with pytest.raises(SystemExit) as e:  # the command line: one line, the file named
            cli.run(args)
        assert str(e.value.code).startswith(f"python -m benchmarks: error: damaged file {ident}")
        assert cli.main([*args, "--fresh"]) == 0
        assert json.loads(ident.read_text())["name"] == "damaged-cli"

    def test_a_damaged_committed_cell_is_recomputed_by_the_cli(self, run, capsys):
        out, args = run
        table = (out / "table.md").read_text()
        cell = out / "cells" / "zs" / "no_learning" / "seed0.json"
        cell.write_text("{}")
        capsys.readouterr()
        assert cli.main(args) == 0
        assert f"damaged file {cell}: protocol/method/seed are" in capsys.readouterr().err
        sessions = json.loads((out / "run.json").read_text())["sessions"]
        assert sessions[-1]["cells_computed"] == ["zs/no_learning/seed0"]
        new = (out / "table.md").read_text()
        assert new[new.index("### "):] == table[table.index("### "):]

    def test_report_only_names_the_damaged_file(self, run):
        out, _ = run
        cell = out / "cells" / "zs" / "no_learning" / "seed0.json"
        good = cell.read_text()
        cell.write_text("{}")
        with pytest.raises(ValueError, match=rf"--report-only: damaged file {cell}: .*run the "
                           r"run's command again \(without --report-only\) to recompute it"):
            cli.main(["--report-only", "--output", str(out)])
        cell.write_text(good)
        (out / "run.json").write_text("")
        with pytest.raises(ValueError, match=rf"damaged file {out / 'run.json'}: empty file"):
            cli.main(["--report-only", "--output", str(out)])

    def test_partial_writes_of_a_killed_run_are_dropped(self, run, capsys):
        out, args = run
        tmp = out / "cells" / "zs" / "no_learning" / ".tmp-abc123"
        tmp.write_text('{"half": ')
        capsys.readouterr()
        assert cli.main(args) == 0
        assert not tmp.exists()
        assert f"removed 1 partial write(s) (.tmp-*) that a killed run left in {out}" in (
            capsys.readouterr().err
        )

    def test_read_json_names_the_file(self, tmp_path):
        p = tmp_path / "x.json"
        p.write_text('{"a": "unterminated')
        with pytest.raises(_io.DamagedFileError, match=rf"damaged file {p}: not valid JSON "
                           r"\(Unterminated string"):
            _io.read_json(str(p))
        assert _io.read_json_or_none(str(p)) is None
        assert _io.read_json_or_none(str(tmp_path / "missing.json")) is None
        with pytest.raises(FileNotFoundError):
            _io.read_json(str(tmp_path / "missing.json"))


class TestDamagedTuningRun:
    """``python -m benchmarks tune`` calls ``train.run_cell`` and ``runner.RunLog`` too: its run
    folder recovers the same way."""

    def test_damaged_test_cells_and_run_json_of_a_tuned_run(self, tmp_path, capsys):
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(
            "name: damaged-tune\nseeds: [0]\nthreads: 1\n"
            "dataset: {name: digits, protocols: {zs: {type: zero_shot,\n"
            "  train_classes: [0, 1, 2, 3, 4], test_classes: [5, 6, 7, 8, 9]}}}\n"
            "training: {epochs: 1, batch_size: 16, m_per_class: 4}\n"
            "methods:\n"
            "  - name: triplet\n"
            "    search: {loss.args.margin: {uniform: [0.1, 0.3]}}\n"
            "    loss: {class: TripletMarginLoss, args: {margin: 0.2}}\n"
        )
        out = tmp_path / "run"
        args = ["tune", "--smoke", "--config", str(cfg), "--output", str(out), "--progress",
                "none", "--no-plots"]
        assert cli.run(args) == 0
        assert os.path.realpath(out) not in _io.held_locks()  # released at the end
        table = (out / "table.md").read_text()
        cell = out / "cells" / "zs" / "triplet" / "seed0.json"
        cell.write_text("{}")
        (out / "run.json").write_text("{")
        capsys.readouterr()
        assert cli.run(args) == 0
        err = capsys.readouterr().err
        assert f"damaged file {cell}: protocol/method/seed are" in err
        assert f"damaged file {out / 'run.json'}: not valid JSON" in err
        new = (out / "table.md").read_text()
        assert new[new.index("### "):] == table[table.index("### "):]
