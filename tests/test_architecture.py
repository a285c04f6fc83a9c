"""The package layout, read from the source with ``ast`` (issue 14): rules that hold today, kept from regressing.

- No import cycle between modules of ``prune_landscape``, counting function-local imports too (a cycle
  hidden inside a function is still a cycle in the design).
- Tiers are folders: ``integrations/`` (adapters), ``experiments/`` (sweep and reports), the rest is the
  core. Nothing outside ``integrations/`` imports Lightning, Hydra, OmegaConf or W&B at module level,
  directly or through another module it imports at module level.
- Data flows down the tiers: integrations -> experiments -> core, never back up (function-local imports
  included). The aliases of moved modules (``callbacks.py``, ``lit.py``, ``cli.py``, ...: the modules that
  call ``prune_landscape._moved.alias``) forward to ``integrations/`` and nothing in the package imports them.
- No private name (a module or a name with a leading underscore) is imported from outside the package
  (directory) that owns it (``ALLOWED_PRIVATE_IMPORTS`` is empty).
- Sizes: no module over 400 lines, no function over 60, no public function over 8 parameters (one
  explained exception in ``ALLOWED_LONG_SIGNATURES``).
- No logic repeated across modules: no two functions in different modules share a body of 5 or more
  statements up to renaming (names and constants blanked).

Run as a script (``python tests/test_architecture.py``) it prints the size figures and the import findings.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "prune_landscape"
FRAMEWORKS = frozenset({"lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf", "wandb"})
# The tiers above the core, by folder (relative to the package), lowest first: a module may import its own
# tier and the tiers below it. Only the top one (the adapters) may import the frameworks.
TIER_FOLDERS = ("experiments", "integrations")
ADAPTER_FOLDER = "integrations"
#: The module a deprecated alias calls (what marks a module as an alias of a moved one).
ALIAS_MAKER = f"{PACKAGE}._moved"

# (importer, private thing) pairs allowed to cross a package boundary. Empty: issue 14 removed the last ones;
# a new one fails (make the name public in its owner instead).
ALLOWED_PRIVATE_IMPORTS: frozenset[tuple[str, str]] = frozenset()

# Public functions allowed more parameters than MAX_PUBLIC_PARAMETERS, each with the reason.
ALLOWED_LONG_SIGNATURES = {
    # It stands in for torch.nn.functional.multi_head_attention_forward while tracing, so it must accept
    # exactly torch's 25 parameters.
    "prune_landscape.tracing.generic_ops.mha_forward": 25,
}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_PUBLIC_PARAMETERS = 8


@dataclass(frozen=True)
class Import:
    """One imported module or name, resolved.

    Attributes:
        importer: dotted name of the importing module.
        module: dotted name of the imported module (a submodule when ``from pkg import sub`` names one).
        name: the imported attribute, or None when a whole module is imported.
        module_level: executed on import (not inside a function, not under ``if TYPE_CHECKING``).
        line: line number in the importer.
    """

    importer: str
    module: str
    name: str | None
    module_level: bool
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def package_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (packages map to their ``__init__.py``)."""
    return {_module_name(p): p for p in sorted((REPO / PACKAGE).rglob("*.py"))}


def _is_package(name: str) -> bool:
    path = package_modules().get(name)
    return path is not None and path.name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk_imports(node: ast.AST, module_level: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, module_level
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk_imports(child, False)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for branch in child.body:
                yield from _walk_imports(ast.Module(body=[branch], type_ignores=[]), False)
            for branch in child.orelse:
                yield from _walk_imports(ast.Module(body=[branch], type_ignores=[]), module_level)
        else:
            yield from _walk_imports(child, module_level)


def imports_of(path: Path, importer: str | None = None, known: set[str] | dict[str, Path] | None = None) -> list[Import]:
    """The imports of one file, relative imports resolved, ``from pkg import submodule`` read as a module.

    ``known`` is the set of module names that count as submodules (default: the package's modules).
    """
    importer = importer or _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    known = package_modules() if known is None else known
    found = []
    for node, module_level in _walk_imports(tree, True):
        if isinstance(node, ast.Import):
            found += [Import(importer, alias.name, None, module_level, node.lineno) for alias in node.names]
            continue
        base = node.module or ""
        if node.level:
            # The package a relative import counts from: the module's own package, then up (level - 1).
            anchor = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in known:
                found.append(Import(importer, submodule, None, module_level, node.lineno))
            else:
                found.append(Import(importer, base, alias.name, module_level, node.lineno))
    return found


@cache
def package_imports() -> tuple[Import, ...]:
    """Every import of every module of the package."""
    return tuple(i for name, path in package_modules().items() for i in imports_of(path, name))


def import_graph(module_level_only: bool) -> dict[str, set[str]]:
    """Module -> package modules it names in an import (parent packages run implicitly are not edges)."""
    graph: dict[str, set[str]] = {name: set() for name in package_modules()}
    for imp in package_imports():
        if imp.module in graph and imp.module != imp.importer and (imp.module_level or not module_level_only):
            graph[imp.importer].add(imp.module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def tier(module: str) -> int:
    """0 for the core, then 1 + the index of the module's tier folder (``experiments/``, ``integrations/``)."""
    parts = module.split(".")[1:]
    return TIER_FOLDERS.index(parts[0]) + 1 if parts and parts[0] in TIER_FOLDERS else 0


def is_adapter(module: str) -> bool:
    """True for the modules allowed to import the frameworks: those under ``integrations/``."""
    parts = module.split(".")[1:]
    return bool(parts) and parts[0] == ADAPTER_FOLDER


def is_alias(module: str) -> bool:
    """True for a deprecated alias of a moved module (it calls ``prune_landscape._moved.alias``)."""
    return any(i.importer == module and i.module == ALIAS_MAKER for i in package_imports())


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def loaded_on_import(module: str) -> set[str]:
    """Package modules executed by ``import module``: module-level imports, followed, with parent packages."""
    graph = import_graph(module_level_only=True)
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += [m for m in graph.get(current, ()) if m not in seen]
        todo += [p for p in _parents(current) if p in graph and p not in seen]
    return seen


def framework_imports(module: str) -> list[Import]:
    """Module-level imports of a framework by ``module`` itself."""
    return [i for i in package_imports() if i.importer == module and i.module_level
            and i.module.split(".")[0] in FRAMEWORKS]


def _owner(module: str, private_module: bool) -> str:
    """The package (directory) that owns a private module, or a private name defined in ``module``."""
    if private_module or not _is_package(module):
        return module.rpartition(".")[0]
    return module


def _home(importer: str) -> str:
    return importer if _is_package(importer) else importer.rpartition(".")[0]


def private_imports(imports: list[Import] | tuple[Import, ...]) -> list[tuple[str, str, int]]:
    """``(importer, private thing, line)`` for every private package module or name imported from outside
    the package that owns it."""
    found = []
    for imp in imports:
        if imp.module.split(".")[0] != PACKAGE:
            continue
        parts = imp.module.split(".")
        for k, part in enumerate(parts[1:], start=1):
            if part.startswith("_") and not part.startswith("__"):
                private = ".".join(parts[: k + 1])
                if _home(imp.importer) != _owner(private, True):
                    found.append((imp.importer, private, imp.line))
                break
        else:
            if imp.name and imp.name.startswith("_") and not imp.name.startswith("__"):
                if _home(imp.importer) != _owner(imp.module, False):
                    found.append((imp.importer, f"{imp.module}.{imp.name}", imp.line))
    return found


def all_private_imports() -> list[tuple[str, str, int]]:
    """Private imports across packages from the package, the tests and the benchmarks."""
    imports = list(package_imports())
    for folder in ("tests", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            imports += imports_of(path)
    return private_imports(imports)


# ------------------------------------------------------------------------------------------------ tests
def test_the_scan_sees_the_package():
    modules = package_modules()
    assert {"prune_landscape", "prune_landscape.masks", "prune_landscape.theory.classify"} <= set(modules)
    graph = import_graph(module_level_only=True)
    assert any("prune_landscape.masks" in targets for targets in graph.values())  # a known edge is found
    assert sum(len(v) for v in graph.values()) > 50
    assert any(framework_imports(m) for m in modules if is_adapter(m))  # the adapters really use the frameworks


def test_the_resolver_on_relative_and_submodule_imports(tmp_path):
    source = tmp_path / "demo.py"
    source.write_text("from . import layers\nfrom .theory import classify, _common\nfrom .layers import _x\n"
                      "def f():\n    import wandb\nif TYPE_CHECKING:\n    import hydra\n")
    known = {"prune_landscape", "prune_landscape.layers", "prune_landscape.theory", "prune_landscape.theory.classify",
             "prune_landscape.theory._common"}
    found = [(i.module, i.name, i.module_level) for i in imports_of(source, "prune_landscape.demo", known)]
    assert found == [("prune_landscape.layers", None, True), ("prune_landscape.theory.classify", None, True),
                     ("prune_landscape.theory._common", None, True), ("prune_landscape.layers", "_x", True),
                     ("wandb", None, False), ("hydra", None, False)]
    assert [p[1] for p in private_imports([Import("prune_landscape.demo", m, n, True, 1) for m, n, _ in found])] == [
        "prune_landscape.theory._common"]  # layers._x is owned by the importer's own package
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_at_module_level():
    found = cycles(import_graph(module_level_only=True))
    assert found == [], f"expected no import cycle between modules, found {found}"


def test_no_import_cycles_counting_function_local_imports():
    found = cycles(import_graph(module_level_only=False))
    assert found == [], f"expected no import cycle (function-local imports included), found {found}"


def test_the_core_imports_no_framework_at_module_level():
    core = [m for m in package_modules() if not is_adapter(m) and not is_alias(m)]
    assert len(core) >= 30 and "prune_landscape.masks" in core and "prune_landscape.integrations.cli" not in core
    assert "prune_landscape.experiments.sweep" in core  # the experiments are held to the same rule
    offenders = {}
    for module in core:
        loaded = loaded_on_import(module)
        adapters = sorted(m for m in loaded if is_adapter(m))
        direct = [f"{i.importer}:{i.line} imports {i.module}" for m in sorted(loaded) for i in framework_imports(m)]
        if adapters or direct:
            offenders[module] = adapters + direct
    assert offenders == {}, f"core modules that load an adapter or a framework on import: {offenders}"


def test_the_tiers_are_folders_and_data_flows_down():
    modules = package_modules()
    adapters = sorted(m for m in modules if is_adapter(m))
    assert {"prune_landscape.integrations.cli", "prune_landscape.integrations.callbacks.audit",
            "prune_landscape.integrations.loggers"} <= set(adapters)
    assert tier("prune_landscape.masks") == 0 and tier("prune_landscape.experiments.sweep") == 1
    assert tier("prune_landscape.integrations.cli") == 2
    upward = sorted(f"{i.importer}:{i.line} imports {i.module}" for i in package_imports()
                    if i.module in modules and tier(i.module) > tier(i.importer))
    assert upward == [], f"imports that climb back up a tier (integrations -> experiments -> core only): {upward}"


def test_the_deprecated_aliases_forward_to_integrations_and_nothing_uses_them():
    modules = package_modules()
    aliases = sorted(m for m in modules if is_alias(m))
    assert aliases == [f"{PACKAGE}.{name}" for name in ("callbacks", "cli", "datamodules", "lit", "loggers")]
    for alias in aliases:
        text = modules[alias].read_text(encoding="utf-8")
        target = f'_MOVED_TO = "{PACKAGE}.{ADAPTER_FOLDER}.{alias.rpartition(".")[2]}"'
        assert target in text, f"{alias}: expected the line {target!r}"
        assert f"{PACKAGE}.{ADAPTER_FOLDER}.{alias.rpartition('.')[2]}" in modules
    users = sorted(f"{i.importer}:{i.line}" for i in package_imports() if i.module in aliases)
    assert users == [], f"package modules importing a deprecated alias (import from integrations/): {users}"


def test_no_new_private_import_across_packages():
    found = all_private_imports()
    new = sorted({(importer, private) for importer, private, _ in found} - ALLOWED_PRIVATE_IMPORTS)
    where = {(importer, private): line for importer, private, line in found}
    assert new == [], "private names imported from outside their package (make them public in their owner): " + "; ".join(
        f"{importer} (line {where[(importer, private)]}) imports {private}" for importer, private in new)


# ------------------------------------------------------------------------------------------------ sizes
def _functions(tree: ast.AST, prefix: str = "", public: bool = True) -> Iterator[tuple[str, ast.AST, bool]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.", public and not node.name.startswith("_"))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            is_public = public and (not node.name.startswith("_") or node.name == "__init__")
            yield f"{prefix}{node.name}", node, is_public
            yield from _functions(node, f"{prefix}{node.name}.<locals>.", False)


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    named = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return len([a for a in named if a not in ("self", "cls")])


def size_report() -> dict[str, list[tuple[str, int]]]:
    """Modules over 400 lines, functions over 60 lines, public functions over 8 parameters (largest first)."""
    modules, functions, parameters = [], [], []
    for name, path in package_modules().items():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            modules.append((name, lines))
        for qualname, node, public in _functions(ast.parse(text)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                functions.append((f"{name}.{qualname}", length))
            if public and _parameters(node) > MAX_PUBLIC_PARAMETERS:
                parameters.append((f"{name}.{qualname}", _parameters(node)))
    return {key: sorted(value, key=lambda item: -item[1])
            for key, value in (("modules", modules), ("functions", functions), ("parameters", parameters))}


def test_no_module_over_the_line_limit():
    assert size_report()["modules"] == [], f"modules over {MAX_MODULE_LINES} lines (split along a seam)"


def test_no_function_over_the_line_limit():
    assert size_report()["functions"] == [], f"functions over {MAX_FUNCTION_LINES} lines (split along a seam)"


def test_no_public_function_over_the_parameter_limit():
    over = {name: count for name, count in size_report()["parameters"]}
    unexplained = {name: count for name, count in over.items() if ALLOWED_LONG_SIGNATURES.get(name) != count}
    assert unexplained == {}, f"public functions with more than {MAX_PUBLIC_PARAMETERS} parameters (group them in a value)"
    assert set(over) == set(ALLOWED_LONG_SIGNATURES), "stale entries in ALLOWED_LONG_SIGNATURES"


def test_the_size_scan_counts_lines_and_parameters(tmp_path, monkeypatch):
    """The limits are read as documented: a hand-made module with one function of each kind."""
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    source = f"def long():\n{body}\n\ndef wide(a, b, c, d, e, f, g, h, i):\n    pass\n\ndef _private(a, b, c, d, e, f, g, h, i):\n    pass\n"
    source += "\n" * (MAX_MODULE_LINES - len(source.splitlines()) + 1)
    (tmp_path / "fake.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "package_modules", lambda: {"fake": tmp_path / "fake.py"})
    report = size_report()
    assert report == {"modules": [("fake", MAX_MODULE_LINES + 1)], "functions": [("fake.long", 62)],
                      "parameters": [("fake.wide", 9)]}


# ------------------------------------------------------------------------------------------ repetition
MIN_REPEATED_STATEMENTS = 5


class _Shape(ast.NodeTransformer):
    """Names, argument names and constants blanked: what is left is the code's shape."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg, node.annotation = "_", None
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        return ast.copy_location(ast.Constant(value=type(node.value).__name__), node)


def _body_shape(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The shape of a function's body (docstring dropped), or None when it has too few statements to count."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if sum(isinstance(n, ast.stmt) for s in body for n in ast.walk(s)) < MIN_REPEATED_STATEMENTS:
        return None
    module = ast.parse(ast.unparse(ast.Module(body=body, type_ignores=[])))
    return ast.dump(_Shape().visit(module))


def repeated_bodies(modules: dict[str, Path]) -> list[list[str]]:
    """Groups of functions in different modules whose bodies have the same shape (the same logic, renamed)."""
    seen: dict[str, list[str]] = {}
    for name, path in modules.items():
        for qualname, node, _ in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            shape = _body_shape(node)
            if shape is not None:
                seen.setdefault(shape, []).append(f"{name}.{qualname}")
    return [sorted(group) for group in seen.values()
            if len({member.rsplit(".", 1)[0] for member in group}) > 1]


def test_no_logic_repeated_across_modules():
    assert repeated_bodies(package_modules()) == [], "the same function body in two places (give it one owner)"


def test_the_repetition_scan_sees_renamed_copies(tmp_path):
    body = "    total = 0\n    for item in {0}:\n        if item > {1}:\n            total += item\n    return total * 2\n"
    (tmp_path / "a.py").write_text("def f(xs):\n" + body.format("xs", 1))
    (tmp_path / "b.py").write_text("def g(values):\n" + body.format("values", 5) + "\ndef h(v):\n    return v\n")
    assert repeated_bodies({"a": tmp_path / "a.py", "b": tmp_path / "b.py"}) == [["a.f", "b.g"]]


if __name__ == "__main__":
    report = size_report()
    print(f"modules over {MAX_MODULE_LINES} lines: {len(report['modules'])}")
    for name, count in report["modules"]:
        print(f"  {count:5d}  {name}")
    print(f"functions over {MAX_FUNCTION_LINES} lines: {len(report['functions'])}")
    for name, count in report["functions"]:
        print(f"  {count:5d}  {name}")
    print(f"public functions with more than {MAX_PUBLIC_PARAMETERS} parameters: {len(report['parameters'])}")
    for name, count in report["parameters"]:
        print(f"  {count:5d}  {name}")
    print(f"import cycles (module level): {cycles(import_graph(True))}")
    print(f"import cycles (with function-local imports): {cycles(import_graph(False))}")
    found = all_private_imports()
    pairs = sorted({(importer, private) for importer, private, _ in found})
    print(f"private imports across packages: {len(pairs)} (importer -> private thing)")
    for importer, private in pairs:
        print(f"  {importer} -> {private}")
    stale = ALLOWED_PRIVATE_IMPORTS - {(i, p) for i, p, _ in found}
    if stale:
        print(f"allow-list entries no longer needed: {sorted(stale)}")
    sys.exit(0)
