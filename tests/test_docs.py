"""The README's and the user docs' Python examples run, so they cannot rot."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


def test_every_document_is_checked() -> None:
    """The README and the docs exist and the README has runnable examples."""
    assert (ROOT / "README.md") in DOCUMENTS
    assert len(DOCUMENTS) >= 4
    assert python_blocks(ROOT / "README.md")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_python_examples_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every python block of the document runs, in order, in one namespace, in a temp dir."""
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip(f"{path.name} has no python examples")
    text = path.read_text(encoding="utf-8")
    if "<!-- requires: postgres -->" in text and not os.environ.get(
        "CONSENTKIT_TEST_POSTGRES_DSN"
    ):
        pytest.skip("set CONSENTKIT_TEST_POSTGRES_DSN to run the PostgreSQL examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"{path.name}[block {number}]", "exec")
        exec(code, namespace)
