"""The import structure of planner/, read from the code (imports inside functions and TYPE_CHECKING blocks too).

The flow is spec -> space -> transform -> backends -> measure -> record -> select, with shared helpers at ground
level and only the orchestrator (search/), the CLI and the public API on top.  A module may import from its own
layer or an earlier one; no import cycles; no private name (``_x``) imported from another package.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "planner"

# The layer order, declared once: (layer, module prefixes).  The longest matching prefix decides a module's layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("planner.errors", "planner.paths", "planner.yamlio", "planner.cache", "planner.schemes",
                "planner.config", "planner.outputs")),
    ("spec", ("planner.target", "planner.model", "planner.zoo", "planner.backends.registry", "planner.llm.workload",
              "planner.llm.hf", "planner.hfdir")),
    ("space", ("planner.space",)),
    ("transform", ("planner.transforms", "planner.source")),
    ("backends", ("planner.backends", "planner.llm.runtimes")),
    ("measure", ("planner.measure", "planner.llm.measure", "planner.llm.quality", "planner.llm.trial")),
    ("record", ("planner.record",)),
    ("select", ("planner.select",)),
    ("top", ("planner.search", "planner.cli", "planner.cli_handoff", "planner.console", "planner.llm",
             "planner.__main__", "planner")),
]
# (importer, imported) pairs allowed against the order; must stay empty
EXCEPTIONS: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def layer_of(mod: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank is not None, f"{mod} is in no layer: add it to LAYERS in {__file__}"
    return rank


def imports(mods: dict[str, Path]) -> list[tuple[str, str, str, int]]:
    """(importer, imported module, imported name or '', line) for every planner import."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out = []
    for m, f in mods.items():
        base = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("planner"):
                        out.append((m, resolve(a.name), "", node.lineno))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    b = base.split(".")
                    mod = ".".join(b[: len(b) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if not mod.startswith("planner"):
                    continue
                for a in node.names:
                    sub = resolve(f"{mod}.{a.name}")
                    if sub and sub != resolve(mod):  # `from planner.pkg import module`
                        out.append((m, sub, "", node.lineno))
                    else:
                        out.append((m, resolve(mod), a.name, node.lineno))
    return [(a, b, n, ln) for a, b, n, ln in out if b and b != a and b != "planner"]


def backward_imports(mods: dict[str, Path]) -> list[str]:
    bad = []
    for a, b, _, line in imports(mods):
        if layer_of(b) > layer_of(a) and (a, b) not in EXCEPTIONS:
            bad.append(f"{mods[a].relative_to(ROOT.parent)}:{line}: {a} ({LAYERS[layer_of(a)][0]}) imports "
                       f"{b} ({LAYERS[layer_of(b)][0]}), a later stage")
    return bad


def cycles(mods: dict[str, Path]) -> list[list[str]]:
    edges = defaultdict(set)
    for a, b, _, _ in imports(mods):
        edges[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(mods):
        if v not in index:
            visit(v)
    return found


def private_imports(mods: dict[str, Path]) -> list[str]:
    def package(m: str) -> str:  # planner.<subpackage>, or the module itself for top-level modules
        parts = m.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 and (ROOT / parts[1]).is_dir() else m

    bad = []
    for a, b, name, line in imports(mods):
        if name.startswith("_") and not name.startswith("__") and package(a) != package(b):
            bad.append(f"{mods[a].relative_to(ROOT.parent)}:{line}: {a} imports private {b}.{name}")
    return bad


def test_every_module_has_a_layer():
    for m in modules():
        layer_of(m)


def test_no_import_runs_against_the_flow():
    bad = backward_imports(modules())
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    found = cycles(modules())
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_no_private_name_crosses_a_package():
    bad = private_imports(modules())
    assert not bad, "\n".join(bad)


def test_the_checker_catches_what_it_must(tmp_path):
    """A backward import, a cycle and a private import in a fake tree are all reported, with file and line."""
    pkg = tmp_path / "planner"
    (pkg / "backends").mkdir(parents=True)
    (pkg / "search").mkdir()
    for d in (pkg, pkg / "backends", pkg / "search"):
        (d / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "backends" / "x.py").write_text("def f():\n    from planner.search.y import _helper\n")
    (pkg / "search" / "y.py").write_text("import planner.backends.x\n_helper = 1\n")
    mods = {}
    for f in pkg.rglob("*.py"):
        parts = list(f.relative_to(tmp_path).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    global ROOT
    saved, ROOT = ROOT, pkg
    try:
        back = backward_imports(mods)
        cyc = cycles(mods)
        priv = private_imports(mods)
    finally:
        ROOT = saved
    assert back and "planner/backends/x.py:2" in back[0] and "a later stage" in back[0]
    assert cyc == [["planner.backends.x", "planner.search.y"]]
    assert priv and "_helper" in priv[0]
