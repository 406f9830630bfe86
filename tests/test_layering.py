"""Which package may import which: the host tool (`tools/`) is a product and runs without the
verification benches (`sim/`); its simulated device is `hw.harness`."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOLS = sorted((REPO / "tools").glob("*.py"))


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every import in `path`, at any depth (function-local ones
    too); relative imports are the file's own package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_the_check_sees_local_and_dotted_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from sim.verilator import x\n    import sim.testing\n"
                      "from . import client\nimport numpy as np\n")
    assert imported_packages(source) == {"sim", "numpy"}


@pytest.mark.parametrize("path", TOOLS, ids=lambda p: p.name)
def test_no_tools_module_imports_sim(path):
    assert "sim" not in imported_packages(path), f"{path.name} imports sim/"


def test_tools_has_modules_to_check():
    assert {p.name for p in TOOLS} >= {"nsm.py", "main.py", "transport.py", "client.py"}
