"""The layout docs/ARCHITECTURE.md describes is the layout the code has.

Imports are read with ``ast`` (nothing is imported): each package may import
only the packages the architecture allows; no module imports another
package's private (``_``) module; module-level imports have no cycles;
product code never imports ``bench`` or ``tests``; the protocol package,
the clients and the browser package (but its users) never import Locust;
and the document names every package that exists, and only those.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO

PRODUCT = ("stream_harness", "fake_backend", "loadtests", "analysis")

#: Package -> the packages of ours it may import (itself always).  Mirrors docs/ARCHITECTURE.md.
ALLOWED: dict[str, set[str]] = {
    "stream_harness.contract": set(),
    "stream_harness.paths": set(),
    "stream_harness.allocator": set(),
    "stream_harness.provenance": {"stream_harness.paths"},
    "stream_harness.cli": {
        "stream_harness.contract", "stream_harness.paths", "stream_harness.allocator", "analysis", "fake_backend",
        "loadtests", "loadtests.options",
    },
    "fake_backend": {"stream_harness.contract"},
    "analysis": {"stream_harness.contract"},
    "loadtests.protocol": {"stream_harness.contract"},
    "loadtests.clients": {"stream_harness.contract", "loadtests.protocol", "loadtests.results", "loadtests.errors"},
    "loadtests.results": {
        "stream_harness.contract", "stream_harness.provenance", "stream_harness.allocator", "analysis",
        "loadtests.errors", "loadtests.hooks", "loadtests.options", "loadtests.selfcheck", "loadtests.clock",
        "loadtests.children",
    },
    "loadtests.live": {
        "stream_harness.contract", "analysis", "loadtests.hooks", "loadtests.options", "loadtests.results",
        "loadtests.selfcheck",
    },
    "loadtests.browser": {
        "stream_harness.contract", "analysis", "loadtests.protocol", "loadtests.clients", "loadtests.results",
        "loadtests.errors", "loadtests.options", "loadtests.selfcheck", "loadtests.users", "loadtests.harness_run",
        "loadtests.children",
    },
}  # fmt: skip
#: Modules that only run as scripts (``python -m x``): entry points, exempt from the layering.
ENTRY_POINTS = {"analysis.__main__", "stream_harness.__main__", "stream_harness.cli.__main__"}
LOCUST_FREE = ("loadtests.protocol", "loadtests.clients")
#: The browser package's Locust side: only its users (the rest runs in tests and the helper process too).
BROWSER_LOCUST_SIDE = "loadtests.browser.users"


def modules() -> dict[str, Path]:
    out = {}
    for package in PRODUCT:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, at module level?) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, id(node) in top
            for alias in node.names:  # "from package import module"
                yield f"{node.module}.{alias.name}", id(node) in top


def layer(module: str) -> str:
    for rule in sorted(ALLOWED, key=len, reverse=True):
        if module == rule or module.startswith(rule + "."):
            return rule
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("loadtests", "stream_harness") and len(parts) > 1 else parts[0]


def ours(name: str) -> bool:
    return name.split(".")[0] in PRODUCT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_the_architecture_allows(package: str):
    found = modules()
    bad = []
    for module, path in found.items():
        if layer(module) != package or module in ENTRY_POINTS:
            continue
        for target, _ in imports(path):
            if not ours(target) or target not in found and target.rsplit(".", 1)[0] not in found:
                continue
            target_layer = layer(target if target in found else target.rsplit(".", 1)[0])
            if target_layer != package and target_layer not in ALLOWED[package]:
                bad.append(f"{module} imports {target}")
    assert not bad, bad


def test_no_module_imports_another_packages_private_module():
    bad = []
    for module, path in modules().items():
        for target, _ in imports(path):
            parts = target.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
            if ours(target) and private and ".".join(parts[: private[0]]) != module.rsplit(".", 1)[0]:
                bad.append(f"{module} imports {target}")
    assert not bad, bad


def test_module_level_imports_have_no_cycles():
    found = modules()
    graph: dict[str, set[str]] = {m: set() for m in found}
    for module, path in found.items():
        if module in ENTRY_POINTS:
            continue
        for target, top in imports(path):
            if top and target in found and target != module:
                graph[module].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def test_product_code_never_imports_bench_or_tests_and_clients_never_import_locust():
    bad = []
    for module, path in modules().items():
        for target, _ in imports(path):
            root = target.split(".")[0]
            if root in ("bench", "tests"):
                bad.append(f"{module} imports {target}")
            if root == "locust" and module.startswith(LOCUST_FREE):
                bad.append(f"{module} imports {target}")
            locust_side = root == "locust" or target in ("loadtests.users", "loadtests.harness_run")
            if locust_side and module.startswith("loadtests.browser") and module != BROWSER_LOCUST_SIDE:
                bad.append(f"{module} imports {target}")
    assert not bad, bad


def test_the_architecture_document_names_exactly_the_packages_that_exist():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^### `([a-z_./]+)/`", text, flags=re.MULTILINE))
    packages = {
        str(path.parent.relative_to(REPO))
        for top in PRODUCT
        for path in (REPO / top).rglob("__init__.py")
        if "static" not in path.parts
    }
    assert named == packages, f"in the document only: {named - packages}; in the code only: {packages - named}"


def test_the_architecture_diagram_is_valid_mermaid(mermaid_check: Path):
    document = REPO / "docs" / "ARCHITECTURE.md"
    assert document.read_text(encoding="utf-8").count("```mermaid") == 1
    done = subprocess.run(["node", str(mermaid_check), str(document)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
