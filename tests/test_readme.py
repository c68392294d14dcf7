"""README's install and test commands are what CI runs, line for line."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _block_after(heading: str, text: str) -> list[str]:
    section = text.split(f"## {heading}", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_ci_runs_readme_install_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install = [line for line in _block_after("Install and run", readme) if not line.startswith("llm4rec ")]
    assert install, "README lost its install block"
    for line in install + _block_after("Test", readme):
        assert line in ci, f".ci/run does not run README's line: {line}"
