"""The README's library example must keep working as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_library_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text()
    match = re.search(r"## Using it as a library.*?```python\n(.*?)```", text, re.S)
    assert match, "README lost its library example"
    exec(compile(match.group(1), str(README), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out == ["OK", "Value(value=b'world')"]
