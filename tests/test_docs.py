"""The Python examples in the README and docs run as written, in order, one folder per doc."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)


@pytest.mark.parametrize("doc", [d for d in DOCS if blocks(d)], ids=lambda d: d.name)
def test_python_blocks_run(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks(doc)):
        exec(compile(code, f"{doc.name}[{i}]", "exec"), {"__name__": "__doc__"})


def test_linked_docs_exist():
    for doc in DOCS:
        for link in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
            if not link.startswith("http"):
                assert (doc.parent / link).exists(), f"{doc.name}: {link}"
