"""The shape of the package: imports run one way without cycles, functions stay small, nothing is written twice."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "featcache"

#: each module's layer; a module imports only from lower layers or from its own package, never upwards
LAYERS = {
    "featcache.errors": 0,
    "featcache.hashing": 0,
    "featcache.progress": 0,
    "featcache.versions": 0,
    "featcache.tf_logs": 0,
    "featcache.names": 0,
    "featcache.locations": 0,
    "featcache.images": 1,
    "featcache.augment": 1,
    "featcache.backbones.registry": 1,  # data only, which config validates against
    "featcache.config": 2,
    "featcache.cache": 3,
    "featcache.backbones": 3,
    "featcache.demo": 3,  # where the demo's images come from
    "featcache.extraction": 4,
    "featcache.training": 4,
    "featcache.serving": 5,
    "featcache.api": 6,
    "featcache.cli": 7,
    "featcache.__main__": 8,
    "featcache": 8,  # the package's __init__ points lazily at the API
}
MAX_FUNCTION_LINES = 40
REPEAT_LINES = 6


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str) -> set[str]:
    """featcache modules ``path`` imports, at the top or inside functions."""
    modules, found = _modules(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}: relative import"
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
            found.update(submodules or {node.module})  # `from pkg import module` imports the module
    return {m for m in found if m in modules and m != name}


def _layer(module: str) -> tuple[int, str]:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix], prefix
    raise AssertionError(f"{module} has no layer in tests/test_architecture.py")


def _graph() -> dict[str, set[str]]:
    return {name: _imports(path, name) for name, path in _modules().items()}


def test_imports_run_downwards_only():
    wrong = []
    for module, imported in _graph().items():
        level, group = _layer(module)
        for other in imported:
            other_level, other_group = _layer(other)
            if other_group != group and other_level >= level:
                wrong.append(f"{module} -> {other}")
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


def test_imports_form_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(trail + [node, nxt])
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def _functions(tree: ast.AST):
    return (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def _code_start(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The line of a function's first statement after its docstring: above it, the signature and docstring
    declare the function (an API function's options and their documentation), below it is its code."""
    body = function.body
    documented = ast.get_docstring(function) is not None and len(body) > 1
    return (body[1] if documented else body[0]).lineno


def test_functions_stay_small():
    long = []
    for name, path in _modules().items():
        for node in _functions(ast.parse(path.read_text())):
            lines = node.end_lineno - _code_start(node) + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{name}.{node.name} ({lines} lines)")
    assert not long, f"functions of over {MAX_FUNCTION_LINES} lines of code: {', '.join(long)}"


def test_shared_helpers_are_defined_once():
    defined = defaultdict(list)
    for name, path in _modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                defined[node.name.lstrip("_")].append(name)
    twins = ["softmax", "load_head", "check_out", "batches", "version", "progress_bar", "file_sha256", "json_sha256"]
    repeated = {t: defined[t] for t in twins if len(defined[t]) > 1}
    assert not repeated, repeated


#: a keyword argument handed on under its own name (``lr=lr,``): it names a value and computes nothing
PASSED_ON = re.compile(r"(\w+)=\1,?")


def _declaration_lines(source: str) -> set[int]:
    """The lines of every import, and of the parameters of every function: functions that take the same
    options each declare them."""
    tree = ast.parse(source)
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    lines = {number for node in imports for number in range(node.lineno, node.end_lineno + 1)}
    return lines | {number for node in _functions(tree) for number in range(node.lineno + 1, node.body[0].lineno)}


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped line) of lines that carry code: no blanks, comments, lone brackets, imports,
    parameters, or keyword arguments handed on under their own name."""
    source, kept = path.read_text(), []
    declarations = _declaration_lines(source)
    for number, line in enumerate(source.splitlines(), start=1):
        text = line.strip()
        if number in declarations or PASSED_ON.fullmatch(text) or text.startswith("#"):
            continue
        if text.strip("()[]{},:"):
            kept.append((number, text))
    return kept


def test_no_block_of_lines_is_written_twice():
    seen: dict[tuple[str, ...], str] = {}
    repeats = []
    for name, path in sorted(_modules().items()):
        lines = _code_lines(path)
        for i in range(len(lines) - REPEAT_LINES + 1):
            block = tuple(text for _, text in lines[i : i + REPEAT_LINES])
            where = f"{name}:{lines[i][0]}"
            if block in seen:
                repeats.append(f"{where} repeats {seen[block]}")
            seen.setdefault(block, where)
    assert not repeats, repeats
