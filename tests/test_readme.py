"""The README's Python examples run as written (they are the first thing a user copies)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)  # noqa: S102
    q, particles = namespace["q"], namespace["particles"]
    assert q.dim == 2 and particles.shape == (100, 2)
    # The example target is N(1, 0.5² I): the fitted flow and SVGD both find its mean.
    assert (q.sample(5000).mean(0) - 1.0).abs().max() < 0.1
    assert (particles.mean(0) - 1.0).abs().max() < 0.1
    # The first example, infer with defaults, matches it too and says so.
    assert (namespace["draws"].mean(0) - 1.0).abs().max() < 0.05
    assert namespace["result"].verdict.startswith("good")
