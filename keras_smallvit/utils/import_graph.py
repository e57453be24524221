"""The package's import graph, read from the sources (nothing is imported).

    python -m keras_smallvit.utils.import_graph            # cycles, then exit 1 if any
    python -m keras_smallvit.utils.import_graph --edges    # every edge, module-level and deferred
    python -m keras_smallvit.utils.import_graph --module keras_smallvit.models.registry

Every `import` of a `keras_smallvit` module is an edge; the ones inside a
function or method (run on first call, "deferred") are listed apart from
the module-level ones. An edge goes to the module imported: `from a.b import
c` to `a.b.c` when that is a module, else to `a.b` (for a package, its
`__init__`). The package `__init__`s each parent import runs are no edges
of their own: a lazy `__init__` (PEP 562, as every one here that a
Keras-free module sits under) imports nothing, and `tests/test_import_graph.py`
imports the modules that were in cycles first, each in a fresh interpreter.
Imports by name at run time (`importlib.import_module`, the lazy
`__getattr__`s) are not read.

A cycle among the module-level edges breaks the package (one of its modules
meets a half-imported one, depending on which is imported first); a cycle
through a deferred edge holds only until that import moves to the top.
`tests/test_import_graph.py` asserts that there is neither.
"""

import argparse
import ast
import os
import sys

PACKAGE = "keras_smallvit"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def module_files(root=ROOT, package=PACKAGE):
    """`{module name: file}` of every module of the package (its
    `__init__.py`s as the packages' names)."""
    modules = {}
    for folder, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith((".", "__pycache__")))
        if "__init__.py" not in files:
            folders[:] = []
            continue
        parts = [package, *os.path.relpath(folder, root).split(os.sep)]
        parts = [p for p in parts if p != "."]
        for file in sorted(files):
            if file.endswith(".py"):
                name = ".".join(parts if file == "__init__.py" else [*parts, file[:-3]])
                modules[name] = os.path.join(folder, file)
    return modules


def _imports(tree, module, is_package, modules):
    """`[(imported module, deferred, line)]` of a module's syntax tree, of
    the modules among `modules`."""
    found = []

    def visit(node, deferred):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, deferred, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = module.split(".")
                    parts = parts[: len(parts) - child.level + (1 if is_package else 0)]
                    base = ".".join([*parts, base] if base else parts)
                names = [f"{base}.{alias.name}" for alias in child.names]
                found.extend((name, deferred, child.lineno) for name in names if name in modules)
                if any(name not in modules for name in names):  # a name of `base` itself
                    found.append((base, deferred, child.lineno))
            visit(child, deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return [(name, deferred, line) for name, deferred, line in found if name in modules and name != module]


def import_graph(root=ROOT, package=PACKAGE):
    """`{module: {imported module: (deferred, line)}}` of the package's own
    imports (see the module's docstring); a module imported both at module
    level and deferred is a module-level edge."""
    modules = module_files(root, package)
    graph = {}
    for name, file in modules.items():
        with open(file, encoding="utf-8") as f:
            tree = ast.parse(f.read(), file)
        edges = {}
        for imported, deferred, line in _imports(tree, name, file.endswith("__init__.py"), modules):
            previous = edges.get(imported)
            if previous is None or (previous[0] and not deferred):
                edges[imported] = (deferred, line)
        graph[name] = edges
    return graph


def find_cycles(graph, deferred=True):
    """`[(cycle, modules)]`: for each strongly connected component of
    `graph` (modules that import one another, directly or not), one of its
    shortest cycles as `[a, b, ..., a]` and all its modules; without the
    deferred edges for `deferred=False`."""
    edges = {a: sorted(b for b, (late, _) in targets.items() if deferred or not late) for a, targets in graph.items()}
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges) + 100))
    try:
        for node in sorted(edges):
            if node not in index:
                connect(node)
    finally:
        sys.setrecursionlimit(limit)
    return [(_one_cycle(edges, component), sorted(component)) for component in components]


def _one_cycle(edges, component):
    """A shortest cycle through the first (sorted) module of `component`."""
    start = min(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for target in edges.get(path[-1], ()):
            if target == start:
                return path + [start]
            if target in component and target not in seen:
                seen.add(target)
                paths.append(path + [target])
    return [start, start]


def describe_cycle(graph, cycle):
    """`a -> b (deferred, line 12) -> a`."""
    text = cycle[0]
    for a, b in zip(cycle, cycle[1:]):
        deferred, line = graph[a][b]
        text += f" -> {b}" + (f" (deferred, line {line})" if deferred else "")
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", action="store_true", help="print every edge")
    parser.add_argument("--module", default=None, help="print the edges of this module only")
    args = parser.parse_args(argv)
    graph = import_graph()
    if args.edges or args.module:
        for name in sorted(graph):
            if args.module and name != args.module:
                continue
            for target, (deferred, line) in sorted(graph[name].items()):
                print(f"{name} -> {target}" + (f"  (deferred, line {line})" if deferred else ""))
    cycles = find_cycles(graph)
    module_level = find_cycles(graph, deferred=False)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} edges "
          f"({sum(d for e in graph.values() for d, _ in e.values())} deferred); "
          f"{len(module_level)} cycle(s) of module-level imports, {len(cycles)} counting the deferred ones")
    for cycle, component in cycles:
        print("cycle:", describe_cycle(graph, cycle))
        if len(component) > len(cycle) - 1:
            print(f"  ({len(component)} modules import one another: {', '.join(component)})")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
