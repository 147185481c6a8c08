"""The Python examples in the docs run as written."""
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", ["architecture.md", "models.md", "reproducing.md"])
def test_doc_examples_run(doc):
    blocks = python_blocks(DOCS / doc)
    assert blocks, f"no python example in {doc}"
    for block in blocks:
        exec(compile(block, str(DOCS / doc), "exec"), {})
