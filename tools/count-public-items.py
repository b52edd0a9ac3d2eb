#!/usr/bin/env python3
"""Counts the public items of a crate from rustdoc's JSON output.

Usage (from the repository root):
    cargo +nightly rustdoc -p eoi-exit --all-features -- -Z unstable-options --output-format json
    python3 tools/count-public-items.py target/doc/eoi_exit.json [--list]

An item is anything a user can name: a module, type, trait, public field,
enum variant, inherent method or associated constant, free function or
constant. Each is counted once, however many paths re-export it; trait
implementations are not counted.
"""
import json
import sys
from collections import Counter


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/doc/eoi_exit.json"
    doc = json.load(open(path))
    idx = doc["index"]
    seen, kinds, items = set(), Counter(), []

    def visit(iid, where):
        it = idx.get(str(iid))
        if it is None or it.get("crate_id") != 0:
            return
        kind = next(iter(it["inner"]))
        if kind == "use":
            target = it["inner"]["use"].get("id")
            if target is not None:
                visit(target, where)
            return
        if str(iid) in seen:
            return
        seen.add(str(iid))
        name = "::".join(where + [it["name"]] if it.get("name") else where)
        kinds[kind] += 1
        items.append((kind, name))
        if kind == "module":
            for child in it["inner"]["module"]["items"]:
                if idx.get(str(child), {}).get("visibility") == "public":
                    visit(child, where + [it["name"]])
            return
        inner = it["inner"].get(kind, {})
        if kind == "struct":
            shape = inner["kind"]
            fields = shape.get("plain", {}).get("fields", []) if "plain" in shape else [
                f for f in shape.get("tuple", []) if f is not None]
            for f in fields:
                if idx[str(f)]["visibility"] == "public":
                    kinds["field"] += 1
                    items.append(("field", name + "." + str(idx[str(f)]["name"])))
        if kind == "enum":
            for v in inner["variants"]:
                kinds["variant"] += 1
                items.append(("variant", name + "::" + idx[str(v)]["name"]))
        if kind == "trait":
            for x in inner["items"]:
                kinds["trait item"] += 1
                items.append(("trait item", name + "::" + str(idx[str(x)]["name"])))
        for imp in inner.get("impls", []) if isinstance(inner, dict) else []:
            body = idx[str(imp)]["inner"]["impl"]
            if body["trait"] is not None:
                continue
            for x in body["items"]:
                if idx[str(x)]["visibility"] == "public":
                    k = "method/assoc " + next(iter(idx[str(x)]["inner"]))
                    kinds[k] += 1
                    items.append((k, name + "::" + str(idx[str(x)]["name"])))

    visit(doc["root"], [])
    if "--list" in sys.argv:
        for kind, name in items:
            print(f"{kind:28} {name}")
    print(f"{sum(kinds.values())} public items: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common()))


if __name__ == "__main__":
    main()
