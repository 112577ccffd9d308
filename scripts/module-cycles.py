#!/usr/bin/env python3
"""Reports import circles between Rust modules: none may import from a module that imports it back.

Usage: scripts/module-cycles.py [-v] [SRC_DIR ...] | --self-test   (default: every crates/*/src and src/;
-v lists every place an edge of a cycle is written, not only the first)

For each crate the script walks the module tree from lib.rs (or main.rs) along its `mod`
declarations, reads every `crate::`, `super::` and `self::` path (in `use` trees and in code),
follows `pub use` re-exports to the module that defines the item (the re-exporting module is
named too), and turns each reference into an
edge between the two modules that sit directly below the referencing pair's lowest common
ancestor: `a::x` naming `b::y` is an edge a -> b between top-level modules, `a::x` naming `a::y` an
edge x -> y between siblings under `a`. A parent naming its child, or a child naming its parent,
is no edge (the child is part of the parent). Every strongly connected set of two or more
siblings is reported with one of its cycles and where each step of it is written. Unit tests
count: a `mod tests` is part of its module.

Exit status: 0 without a cycle, 1 with one, 2 when the sources cannot be read.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text: str) -> str:
    """Blanks comments and the insides of string and char literals, keeping every newline."""
    out: list[str] = []
    i, n = 0, len(text)

    def blank(s: str) -> str:
        return "".join(c if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif (m := re.compile(r"b?r(#*)\"").match(text, i)) and (i == 0 or not re.match(r"\w", text[i - 1])):
            close = '"' + m.group(1)
            j = text.find(close, m.end())
            j = n if j < 0 else j + len(close)
            out.append(blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i : j + 1]))
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}'), else a lifetime ('a) left as it is.
            if nxt == "\\":
                j = text.find("'", i + 3 if text.startswith("\\'", i + 1) else i + 2)
                out.append(blank(text[i : j + 1]))
                i = j + 1
            elif i + 2 < n and text[i + 2] == "'":
                out.append("   ")
                i += 3
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


@dataclass
class Module:
    """One module: its path below the crate root (() is the root), file and blanked source."""

    path: tuple[str, ...]
    file: Path
    text: str  # the module's own source, inline child modules blanked out
    offset: int  # where `text` starts in the file's blanked text (for line numbers)
    whole: str  # the file's blanked text
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)
    reexports: dict[str, tuple[str, ...]] = field(default_factory=dict)  # item -> full path

    def line(self, pos: int) -> int:
        return self.whole.count("\n", 0, self.offset + pos) + 1


MOD_DECL = re.compile(r"(?:\bpub(?:\s*\([^)]*\))?\s+)?\bmod\s+(" + IDENT + r")\s*([;{])")


def matching_brace(text: str, open_pos: int) -> int:
    depth = 0
    for j in range(open_pos, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def load(src: Path) -> dict[tuple[str, ...], Module]:
    """Every module of the crate rooted in `src`, found along its `mod` declarations."""
    root = next((src / f for f in ("lib.rs", "main.rs") if (src / f).exists()), None)
    if root is None:
        raise FileNotFoundError(f"{src}: no lib.rs or main.rs")
    modules: dict[tuple[str, ...], Module] = {}

    def visit(path: tuple[str, ...], file: Path, whole: str, start: int, end: int, child_dir: Path) -> None:
        body = whole[start:end]
        own = list(body)
        mod = Module(path, file, "", start, whole)
        modules[path] = mod
        pos = 0
        while m := MOD_DECL.search(body, pos):
            name = m.group(1)
            mod.children[name] = path + (name,)
            if m.group(2) == ";":
                candidates = [child_dir / f"{name}.rs", child_dir / name / "mod.rs"]
                found = next((c for c in candidates if c.exists()), None)
                if found is None:
                    raise FileNotFoundError(f"{file}: mod {name}; has no file")
                text = strip(found.read_text())
                sub_dir = found.parent if found.name == "mod.rs" else found.parent / found.stem
                visit(path + (name,), found, text, 0, len(text), sub_dir)
                pos = m.end()
            else:
                close = matching_brace(body, m.end() - 1)
                visit(path + (name,), file, whole, start + m.end(), start + close, child_dir / name)
                own[m.end() : close] = [ch if ch == "\n" else " " for ch in body[m.end() : close]]
                pos = close + 1
        mod.text = "".join(own)

    text = strip(root.read_text())
    visit((), root, text, 0, len(text), src)
    return modules


USE_STMT = re.compile(r"\b(pub(?:\s*\([^)]*\))?\s+)?use\s+([^;]+);")


def expand(tree: str) -> list[tuple[list[str], str | None]]:
    """`a::{b, c::{d as e}}` -> [(['a','b'], None), (['a','c','d'], 'e')]."""
    results: list[tuple[list[str], str | None]] = []

    def walk(prefix: list[str], s: str) -> None:
        depth, start, parts = 0, 0, []
        for k, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        parts.append(s[start:])
        for part in parts:
            brace = part.find("{")
            if brace >= 0:
                head = [p.strip() for p in part[:brace].split("::") if p.strip()]
                walk(prefix + head, part[brace + 1 : part.rfind("}")])
            elif part.strip():
                alias = None
                if m := re.fullmatch(r"(.*\S)\s+as\s+(" + IDENT + r")\s*", part, re.S):
                    part, alias = m.group(1), m.group(2)
                segs = [p.strip() for p in part.split("::") if p.strip()]
                results.append((prefix + segs, alias))

    walk([], tree)
    return results


class Crate:
    def __init__(self, src: Path):
        self.src = src
        self.modules = load(src)
        self.aliases: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {}
        for mod in self.modules.values():
            self.aliases[mod.path] = dict(mod.children)
        # Re-exports and aliases first, in rounds, so a re-export of a re-export resolves too.
        for _ in range(4):
            for mod in self.modules.values():
                for m in USE_STMT.finditer(mod.text):
                    for segs, alias in expand(m.group(2)):
                        if not segs or segs[-1] in ("*", "self"):
                            if segs and segs[-1] == "self":
                                target = self.resolve(mod.path, segs[:-1])
                                if target and self.is_module(target):
                                    self.aliases[mod.path][alias or segs[-2]] = target
                            continue
                        target = self.resolve(mod.path, segs)
                        if target is None:
                            continue
                        name = alias or segs[-1]
                        if self.is_module(target):
                            self.aliases[mod.path][name] = target
                        elif m.group(1):
                            mod.reexports[name] = target

    def is_module(self, path: tuple[str, ...]) -> bool:
        return path in self.modules

    def resolve(self, at: tuple[str, ...], segs: list[str], via: list | None = None) -> tuple[str, ...] | None:
        """The full path `segs` names from module `at`, or None when it leaves the crate. Each
        module whose re-export the path goes through is added to `via`: it is named too."""
        if not segs:
            return None
        head, rest = segs[0], segs[1:]
        if head == "crate":
            base: tuple[str, ...] = ()
        elif head == "self":
            base = at
        elif head == "super":
            base = at[:-1]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        elif head in self.aliases.get(at, {}):
            base = self.aliases[at][head]
        else:
            return None
        path = base
        for seg in rest:
            if path in self.modules and seg in self.modules[path].children:
                path = path + (seg,)
            elif path in self.modules and seg in self.modules[path].reexports:
                if via is not None:
                    via.append(path)
                path = self.modules[path].reexports[seg]
            else:
                return path + (seg,)
        return path

    def module_of(self, path: tuple[str, ...]) -> tuple[str, ...]:
        while path and path not in self.modules:
            path = path[:-1]
        return path

    def references(self):
        """(from module, to module, line, written path) for every intra-crate reference."""
        path_re = re.compile(r"(?<![\w$:])(" + IDENT + r")((?:\s*::\s*" + IDENT + r")+)")
        for mod in self.modules.values():
            spans: list[tuple[int, int]] = []
            for m in USE_STMT.finditer(mod.text):
                spans.append((m.start(), m.end()))
                for segs, _ in expand(m.group(2)):
                    segs = [s for s in segs if s not in ("*",)]
                    if segs and segs[-1] == "self":
                        segs = segs[:-1]
                    via: list = []
                    target = self.resolve(mod.path, segs, via)
                    if target is not None:
                        for named in via + [self.module_of(target)]:
                            yield mod, named, mod.line(m.start()), "::".join(segs)
            for m in path_re.finditer(mod.text):
                if any(a <= m.start() < b for a, b in spans):
                    continue
                segs = [m.group(1)] + [s.strip() for s in m.group(2).split("::") if s.strip()]
                via = []
                target = self.resolve(mod.path, segs, via)
                if target is not None:
                    for named in via + [self.module_of(target)]:
                        yield mod, named, mod.line(m.start()), "::".join(segs)


def strongly_connected(nodes, edges):
    """Tarjan's algorithm: the strongly connected sets of the graph."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on: set = set()
    out: list = []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            connect(v)
    return out


def a_cycle(comp, edges):
    """One cycle through the set's first node, by breadth-first search back to it."""
    start = comp[0]
    members = set(comp)
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def shown(file: Path, root: Path) -> str:
    return str(file.relative_to(root)) if file.is_relative_to(root) else str(file)


def name(path: tuple[str, ...]) -> str:
    return "::".join(path) or "crate"


def knots(crate: Crate):
    """Every cycle: (level, members, {(x, y): [where x names y]}) for each strongly connected set
    of two or more modules directly under `level`."""
    edges: dict[tuple[str, ...], dict[tuple[str, ...], set]] = {}
    evidence: dict[tuple, list[tuple[Path, int, str]]] = {}
    for mod, target, line, written in crate.references():
        a, b = mod.path, target
        k = 0
        while k < len(a) and k < len(b) and a[k] == b[k]:
            k += 1
        if k == len(a) or k == len(b):
            continue  # the same module, or a parent and its child
        level, x, y = a[:k], a[: k + 1], b[: k + 1]
        edges.setdefault(level, {}).setdefault(x, set()).add(y)
        evidence.setdefault((x, y), []).append((mod.file, line, written))
    for level in sorted(edges):
        graph = edges[level]
        nodes = set(graph) | {w for ws in graph.values() for w in ws}
        for comp in strongly_connected(nodes, graph):
            if len(comp) > 1:
                members = set(comp)
                inside = {(x, y): evidence[(x, y)] for x in comp for y in sorted(graph.get(x, ())) if y in members}
                yield level, comp, inside, a_cycle(comp, graph)


def check(src: Path, root: Path, verbose: bool) -> int:
    """Prints the crate's cycles (or that it has none); the number of cycles."""
    crate = Crate(src)
    found = 0
    for level, comp, inside, cycle in knots(crate):
        found += 1
        names = ", ".join(p[-1] for p in comp)
        print(f"{shown(src, root)}: under {name(level)}: {{{names}}}, e.g. {' -> '.join(p[-1] for p in cycle)}")
        for (x, y), refs in inside.items():
            where = [f"{shown(f, root)}:{line} {written}" for f, line, written in refs]
            more = f" (and {len(where) - 1} more)" if len(where) > 1 else ""
            print(f"  {name(x)} -> {name(y)}: {where[0]}{more}")
            if verbose:
                for w in where[1:]:
                    print(f"      {w}")
    if not found:
        print(f"{shown(src, root)}: no module cycles ({len(crate.modules)} modules)")
    return found


SELF_TEST = {
    "lib.rs": """
        pub mod a;
        pub mod b;
        pub mod c;
        pub mod d;
        mod inline { pub fn f() { crate::d::g(); } mod deeper { use super::super::c; } }
    """,
    # Names in comments, strings and char literals are no imports; a lifetime is no char.
    "a/mod.rs": """
        pub mod x;
        pub mod y;
        pub use y::Thing;
        // crate::b::commented
        /* crate::b::block /* nested */ crate::b::still */
        const S: &str = "crate::b::in_string \" crate::b::escaped";
        const R: &str = r#"crate::b::"raw"#;
        const C: char = '"';
        fn lt<'a>(s: &'a str) -> &'a str { crate::c::h(); s }
    """,
    # Siblings through `super`, a grouped `use` with `self` and `as`: x <-> y under a.
    "a/x.rs": "use super::{self as parent, y::{self, Other as O}};\nfn f() { y::z(); parent::lt(\"\"); }",
    "a/y.rs": "pub struct Thing; pub struct Other;\npub fn z() { crate::a::x::nothing(); }",
    # b names a only through a's re-export of a::y: still b -> a.
    "b.rs": "use crate::a::Thing;",
    # c names b in its unit tests, b names a, a names c: a knot of three.
    "c.rs": "pub fn h() {}\n#[cfg(test)]\nmod tests { use crate::b as other; }",
    # d only named (by `inline`): no cycle.
    "d.rs": "pub fn g() {}",
}


def self_test() -> int:
    """Checks the checker on a small crate whose cycles are known."""
    import tempfile
    import textwrap

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        for file, text in SELF_TEST.items():
            (src / file).parent.mkdir(parents=True, exist_ok=True)
            (src / file).write_text(textwrap.dedent(text))
        found = {(name(level), tuple(p[-1] for p in comp)) for level, comp, _, _ in knots(Crate(src))}
    expected = {("crate", ("a", "b", "c")), ("a", ("x", "y"))}
    if found != expected:
        print(f"module-cycles self-test: expected {sorted(expected)}, found {sorted(found)}", file=sys.stderr)
        return 1
    print("module-cycles self-test: ok")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--self-test"]:
        return self_test()
    root = Path(__file__).resolve().parent.parent
    verbose = "-v" in argv
    argv = [a for a in argv if a != "-v"]
    dirs = [Path(a).resolve() for a in argv] or sorted(root.glob("crates/*/src")) + [root / "src"]
    total = 0
    try:
        for src in dirs:
            if src.is_dir():
                total += check(src, root, verbose)
    except (OSError, ValueError) as e:
        print(f"module-cycles: {e}", file=sys.stderr)
        return 2
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
