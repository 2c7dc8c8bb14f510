"""The README's and the user docs' Python examples run, so they cannot rot."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from consentkit.cli import build_parser

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


def consentkit_commands(path: Path) -> list[str]:
    """The ``consentkit ...`` command lines of the ```text/```sh blocks of a Markdown file, with
    backslash continuations joined and trailing comments dropped."""
    commands = []
    for block in re.findall(r"^```(?:text|sh)\n(.*?)^```", path.read_text("utf-8"), re.M | re.S):
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.split("  #", 1)[0].strip()
            if line.startswith("consentkit "):
                commands.append(line)
    return commands


def test_command_line_examples_parse() -> None:
    """Every consentkit command shown in the CLI doc is accepted by the command's parser."""
    commands = consentkit_commands(ROOT / "docs" / "cli.md")
    assert len(commands) >= 10
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        assert args.command, command


@pytest.mark.parametrize(
    "path", [d for d in DOCUMENTS if python_blocks(d)], ids=lambda p: p.name
)
def test_python_examples_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every python block of the document runs, in order, in one namespace, in a temp dir."""
    blocks = python_blocks(path)
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
