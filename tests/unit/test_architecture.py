"""The layout rules of docs/ARCHITECTURE.md, checked on the source: no import cycle, rooms import
only downwards, no module over 600 lines, at most ten modules directly in ``stream/``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOMS = ("engine", "trt", "simulators", "stream", "deploy", "mirage")
MAX_LINES = 600
MAX_STREAM_TOP = 10

# (importer prefix, imported prefix) pairs that climb a room: never allowed. Rooms from the bottom:
# engine -> trt -> simulators -> stream; inside stream: core -> worker -> consumers / tools.
FORBIDDEN = (
    ("engine", "trt"), ("engine", "stream"), ("engine", "deploy"), ("engine", "mirage"),
    ("trt", "stream"), ("trt", "simulators"), ("trt", "mirage"),
    ("simulators", "stream"), ("simulators", "trt"), ("simulators", "mirage"),
    ("stream.core", "stream.worker"), ("stream.core", "stream.consumers"), ("stream.core", "stream.tools"),
    ("stream.core", "trt"), ("stream.worker", "stream.tools"), ("stream.worker", "stream.consumers"),
    ("stream.consumers", "stream.worker"), ("stream.consumers", "stream.tools"),
)
# Known arrows up, to be removed (docs/ARCHITECTURE.md, "Left to do"): the synthetic training set
# is built from the simulators' ECG model.
KNOWN_UPWARD = {("engine.data.synthetic", "simulators")}


def modules(root: Path = REPO) -> dict[str, Path]:
    out = {}
    for room in ROOMS:
        for path in sorted((root / room).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> project modules it imports, anywhere in the file (function-level imports count too)."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(filter(None, (resolve(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                deps.update(filter(None, (resolve(f"{target}.{a.name}") for a in node.names)))
        deps.discard(mod)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def _within(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "engine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from engine import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    graph = import_graph(modules(tmp_path))
    assert graph["engine.a"] == {"engine.b"} and graph["engine.b"] == {"engine.a"}
    assert find_cycle(graph) is not None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_rooms_import_only_downwards() -> None:
    graph = import_graph(modules())
    climbing = sorted(
        (mod, dep) for mod, deps in graph.items() for dep in deps
        for low, high in FORBIDDEN
        if _within(mod, low) and _within(dep, high) and not any(_within(mod, a) and _within(dep, b) for a, b in KNOWN_UPWARD)
    )
    assert not climbing, f"imports that climb a room: {climbing}"


@pytest.mark.parametrize("room", ROOMS + ("tests",))
def test_no_module_over_600_lines(room: str) -> None:
    long = {str(p.relative_to(REPO)): n for p in (REPO / room).rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_stream_top_level_stays_small() -> None:
    top = sorted(p.name for p in (REPO / "stream").glob("*.py"))
    assert len(top) <= MAX_STREAM_TOP, f"{len(top)} modules directly in stream/: {top}"
    roles = {p.name for p in (REPO / "stream").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert {"core", "worker", "consumers", "tools"} <= roles
