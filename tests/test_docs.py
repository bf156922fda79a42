"""The Python examples in the README and docs run as written, in order, one folder per doc."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Packages of the optional extras: a doc block that needs a missing one is skipped.
OPTIONAL = {
    "accelerate",
    "keras",
    "lightning",
    "mlflow",
    "pyarrow",
    "pytorch_lightning",
    "tensorboard",
    "torch",
    "transformers",
    "wandb",
}


def blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)


@pytest.mark.parametrize("doc", [d for d in DOCS if blocks(d)], ids=lambda d: d.name)
def test_python_blocks_run(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks(doc)):
        try:
            exec(compile(code, f"{doc.name}[{i}]", "exec"), {"__name__": "__doc__"})
        except ImportError as exc:
            # A block for an optional framework (an extra) that is not installed here.
            if "pip install" in str(exc) or getattr(exc, "name", None) in OPTIONAL:
                pytest.skip(f"{doc.name}[{i}]: {exc}")
            raise


def test_linked_docs_exist():
    for doc in DOCS:
        for link in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
            if not link.startswith("http"):
                assert (doc.parent / link).exists(), f"{doc.name}: {link}"
