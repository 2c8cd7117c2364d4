#!/usr/bin/env python3
"""Module circles inside each crate, and crate arrows that point the wrong way.

    scripts/module-cycles.py            # report; exit 1 if any circle or wrong-way arrow
    scripts/module-cycles.py --quiet    # only the verdict

A module is a file (or folder) under a crate's src/; module A depends on module B when a line of
A (outside `#[cfg(test)]` blocks and comments) names `crate::B` or, from a nested module,
`super::B` reaching B (inside a folder, `super::super::B` from an inline module of a file counts
as reaching its sibling B). Circles are the strongly connected components with more than one module.
Crate arrows come from `cargo metadata` (normal dependencies only) against the pipeline order in
ARCHITECTURE.md.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the pipeline, lowest first: a crate may depend only on crates before it
ORDER = ["edge-kernels", "edge-protocol", "edge-bundle", "edge-sensors", "edge-runtime", "edge-pack", "edge-fleet-kit",
         "edge-runtime-capi", "device-agent", "ota-server", "edgectl", "fleet-tests"]


def strip_tests(text):
    """The source without `#[cfg(test)] mod … { … }` blocks and `//` comments."""
    out, i = [], 0
    lines = text.split("\n")
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("#[cfg(test)]"):
            # skip the item that follows, brace-balanced
            depth, started = 0, False
            i += 1
            while i < len(lines):
                depth += lines[i].count("{") - lines[i].count("}")
                started = started or "{" in lines[i]
                i += 1
                if started and depth <= 0:
                    break
            continue
        out.append(re.sub(r"//.*", "", line))
        i += 1
    return "\n".join(out)


def module_of(src, path):
    """Top-level module of a file: `engine` for src/engine/cpu.rs, None for lib.rs/main.rs."""
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    if first in ("lib.rs", "main.rs"):
        return None
    return first[:-3] if first.endswith(".rs") else first


def graph(src):
    mods = set()
    edges = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            m = module_of(src, path)
            if m is None:
                continue
            mods.add(m)
            text = strip_tests(open(path, encoding="utf-8").read())
            deps = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
            # super:: from a file directly under src/ is the crate root
            depth = len(os.path.relpath(path, src).split(os.sep)) - 1
            if depth == 0:
                deps |= set(re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", text))
            # `use crate::{a, b::c}` groups
            for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
                deps |= {g.strip().split("::")[0] for g in group.split(",") if g.strip()}
            edges.setdefault(m, set()).update(d for d in deps if d != m)
    for m in list(edges):
        edges[m] &= mods
    return mods, edges


def sccs(nodes, edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def nested(src):
    """Circles among the children of each folder module (`engine/depthwise.rs` ->
    `engine/pointwise.rs` through `super::pointwise` or `crate::engine::pointwise`)."""
    found = []
    for dirpath, _, files in os.walk(src):
        if dirpath == src:
            continue
        rel = os.path.relpath(dirpath, src).replace(os.sep, "::")
        kids = {f[:-3] for f in files if f.endswith(".rs") and f != "mod.rs"}
        kids |= {d for d in os.listdir(dirpath) if os.path.isdir(os.path.join(dirpath, d))}
        edges = {}
        for f in files:
            if not f.endswith(".rs") or f == "mod.rs":
                continue
            k = f[:-3]
            text = strip_tests(open(os.path.join(dirpath, f), encoding="utf-8").read())
            deps = set(re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", text))
            # from an inline module of the file (`mod x86 { use super::super::pointwise … }`)
            deps |= set(re.findall(r"\bsuper::super::([a-z_][a-z0-9_]*)", text))
            deps |= set(re.findall(r"\bcrate::" + re.escape(rel) + r"::([a-z_][a-z0-9_]*)", text))
            deps |= set(re.findall(r"\bsuper::super::" + re.escape(rel.split("::")[-1]) + r"::([a-z_][a-z0-9_]*)", text))
            edges[k] = {d for d in deps if d in kids and d != k}
        for c in sccs(kids, edges):
            found.append(rel + "::{" + ", ".join(c) + "}")
    return found


def main():
    quiet = "--quiet" in sys.argv
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT))
    bad = 0
    for pkg in sorted(meta["packages"], key=lambda p: p["name"]):
        src = os.path.join(os.path.dirname(pkg["manifest_path"]), "src")
        mods, edges = graph(src)
        circles = sccs(mods, edges) + [[n] for n in nested(src)]
        if circles:
            bad += len(circles)
        if not quiet:
            verdict = "no module circle" if not circles else "; ".join(
                "circle: " + " <-> ".join(c) for c in circles)
            print(f"{pkg['name']:<20} {len(mods):>3} modules  {verdict}")
        for dep in pkg["dependencies"]:
            if dep.get("kind") or dep["name"] not in ORDER or pkg["name"] not in ORDER:
                continue
            if ORDER.index(dep["name"]) >= ORDER.index(pkg["name"]):
                bad += 1
                print(f"{pkg['name']} depends on {dep['name']}, a crate above it")
    print("module circles and wrong-way crate arrows:", bad)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
