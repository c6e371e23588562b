"""The import graph of medmt5/, prompt_tuning/ and tasks/ (issue 12, item 2), read from the
source with ast (nothing is imported):

- no cycle between modules, counting module-level and function-local imports alike (a local
  import only hides a cycle; it does not remove it);
- the core (medmt5.{model,decoding,training,checkpointing,runtime}) reaches neither `tasks`
  nor `prompt_tuning`, directly or through other modules;
- `tasks` (the ground floor) imports neither medmt5's model / training / decoding nor
  `prompt_tuning`;
- imports sit at the top of the module. The one exception: a heavy optional third-party
  dependency (the roots in LAZY_ALLOWED) may be imported inside a function, with a one-line
  reason on the import line or the line above it: `import seqio  # lazy: <reason>`.
  A project module is never imported inside a function.

Imports under `if TYPE_CHECKING:` are not executed and are left out.
"""
import ast
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("medmt5", "prompt_tuning", "tasks")
CORE = tuple(f"medmt5.{p}" for p in ("model", "decoding", "training", "checkpointing",
                                     "runtime"))
NOT_FROM_CORE = ("tasks", "prompt_tuning")
NOT_FROM_TASKS = ("medmt5.model", "medmt5.training", "medmt5.decoding", "prompt_tuning")
# Third-party packages that are heavy (TensorFlow and what pulls it in, torch, plotting) or
# optional for part of the users (remote storage, the hub, metrics of some tasks): the only
# ones a function may import, so that `import medmt5`, the model and the trainer stay light.
LAZY_ALLOWED = frozenset({
    "tensorflow", "seqio", "torch", "transformers", "peft", "matplotlib", "tensorboard",
    "gcsfs", "huggingface_hub", "tensorstore", "etils", "orbax", "safetensors", "pyarrow",
    "sacrebleu", "rouge_score", "seqeval",
})
LAZY_MARK = "# lazy:"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported name, resolved to a module of the project where it is one
    line: int
    local: bool  # inside a function
    reason: bool  # a `# lazy:` comment on the line or the line above


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = _resolve(module, node)
    out = []
    for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in MODULES else base)
    return out


def _imports(module: str) -> Iterator[Import]:
    path = MODULES[module]
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()

    def reason(lineno: int) -> bool:
        here = lines[lineno - 1]
        above = lines[lineno - 2].strip() if lineno >= 2 else ""
        return LAZY_MARK in here or above.startswith(LAZY_MARK)

    def walk(node: ast.AST, local: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (i for c in child.orelse for i in walk_one(c, local))
                continue
            yield from walk_one(child, local)

    def walk_one(child: ast.AST, local: bool) -> Iterator[Import]:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _targets(module, child):
                yield Import(module, target, child.lineno, local, reason(child.lineno))
        inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                            ast.Lambda))
        yield from walk(child, inner)

    yield from walk(ast.parse(source, filename=str(path)), False)


IMPORTS = [imp for module in MODULES for imp in _imports(module)]


def _project(name: str) -> str | None:
    """The project module `name` refers to (None: a third-party or standard module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        target = _project(imp.target)
        if target and target != imp.module:
            graph[imp.module].add(target)
    return graph


def _where(module: str, target_prefix: str) -> str:
    for imp in IMPORTS:
        if imp.module == module and (_project(imp.target) or "").startswith(target_prefix):
            return f"{MODULES[module].relative_to(ROOT)}:{imp.line}"
    return str(MODULES[module].relative_to(ROOT))


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
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
                    out.append(sorted(component))
    return out


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module (breadth-first: shortest)."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    nxt.append(child)
        frontier = nxt
    return component


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module `start` imports, directly or not, with one import chain to it. Importing
    a.b.c also runs the packages a and a.b, so their __init__ modules count as imported."""
    chains = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            children = set(graph[node])
            for child in graph[node]:
                parts = child.split(".")
                children.update(".".join(parts[:i]) for i in range(1, len(parts)))
            for child in sorted(children):
                if child in MODULES and child not in chains:
                    chains[child] = chains[node] + [child]
                    nxt.append(child)
        frontier = nxt
    return chains


def test_the_walk_finds_the_packages():
    # Guards the test itself: a broken walk would pass every rule below vacuously.
    assert {"medmt5.model.transformer", "medmt5.cli.train", "prompt_tuning.prompts",
            "tasks.vocab"} <= set(MODULES)
    graph = _graph()
    assert "medmt5.model.config" in graph["medmt5.model.transformer"]
    assert sum(len(v) for v in graph.values()) > 100


def test_the_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    components = _strongly_connected(graph)
    assert components == [["a", "b", "c"]]
    assert _cycle_in(components[0], graph) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    graph = _graph()
    cycles = [" -> ".join(_cycle_in(c, graph)) + f"   (all of {', '.join(c)} import each "
              "other in a ring)" if len(c) > 2 else " -> ".join(_cycle_in(c, graph))
              for c in _strongly_connected(graph)]
    assert not cycles, ("import cycles between modules (module-level and function-local "
                        "imports both count); break each by moving the shared code down a "
                        "layer:\n  " + "\n  ".join(cycles))


def test_core_reaches_neither_tasks_nor_prompt_tuning():
    graph = _graph()
    bad = []
    for module in sorted(MODULES):
        if not _under(module, CORE):
            continue
        for target, chain in _reachable(graph, module).items():
            if _under(target, NOT_FROM_CORE):
                bad.append(" -> ".join(chain) + f"  ({_where(chain[0], chain[1])})")
                break
    assert not bad, ("medmt5's core (model, decoding, training, checkpointing, runtime) must "
                     "not import tasks/ or prompt_tuning/ (pass what it needs in as an "
                     "argument):\n  " + "\n  ".join(bad))


def test_tasks_import_no_model_training_decoding_or_prompt_tuning():
    bad = [f"{MODULES[i.module].relative_to(ROOT)}:{i.line}: {i.target}" for i in IMPORTS
           if _under(i.module, ("tasks",)) and _under(i.target, NOT_FROM_TASKS)]
    assert not bad, ("tasks/ is the ground floor: it may not import medmt5.model, "
                     "medmt5.training, medmt5.decoding or prompt_tuning:\n  " + "\n  ".join(bad))


def test_imports_at_the_top():
    bad = []
    for imp in IMPORTS:
        if not imp.local:
            continue
        where = f"{MODULES[imp.module].relative_to(ROOT)}:{imp.line}: {imp.target}"
        if _project(imp.target):
            bad.append(f"{where} (a project module: import it at the top)")
        elif imp.target.split(".")[0] not in LAZY_ALLOWED:
            bad.append(f"{where} (not a heavy optional dependency: import it at the top)")
        elif not imp.reason:
            bad.append(f"{where} (a lazy import needs `{LAZY_MARK} <reason>` on its line "
                       "or the line above)")
    assert not bad, ("function-local imports (only the heavy optional dependencies of "
                     "LAZY_ALLOWED, each with a reason, may be imported inside a function):"
                     "\n  " + "\n  ".join(bad))
