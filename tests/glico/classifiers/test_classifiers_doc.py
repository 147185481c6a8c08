"""The runnable example in docs/classifiers.md runs as written (```py blocks are illustrations only)."""
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "classifiers.md"


def test_doc_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "no runnable python example in docs/classifiers.md"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})
