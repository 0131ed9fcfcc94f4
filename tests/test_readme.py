"""The README's quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _quickstart() -> str:
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quickstart_is_short_and_runs(capsys):
    code = _quickstart()
    assert len(code.strip().splitlines()) <= 10
    exec(compile(code, "README quickstart", "exec"), {})
    out = capsys.readouterr().out
    assert re.match(r"loss -?\d+\.\d{3}, grad norm \d+\.\d{3}", out)


def test_the_two_commands_exist():
    text = README.read_text()
    for script in ("scripts/benchmark.sh", "scripts/test.sh"):
        assert f"bash {script}" in text
        assert (README.parent / script).exists()
    assert "scripts/test.sh" in (README.parent / ".ci" / "run").read_text()
