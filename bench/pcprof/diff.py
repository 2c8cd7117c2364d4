"""Per-inference instructions by function (and by block) from two pcprof runs of one program
with different inference counts: the difference divided by the count difference, so that
loading and the first inference's extra work cancel out."""
import collections
import subprocess
import sys


def load(path):
    blocks = {}
    for line in open(path):
        vaddr, insns, executions, symbol = line.rstrip("\n").split(" ", 3)
        entry = blocks.setdefault((int(vaddr, 16), int(insns)), [0, symbol])
        entry[0] += int(executions)
    return blocks


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
        return dict(zip(names, out.splitlines()))
    except OSError:
        return {n: n for n in names}


def main():
    few, many, runs, blocks_out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    a, b = load(few), load(many)
    per_block = {}
    for key, (executions, symbol) in b.items():
        extra = executions - a.get(key, [0])[0]
        if extra > 0:
            per_block[key] = (extra * key[1] / runs, symbol)
    names = demangle(sorted({s for _, s in per_block.values()}))
    total = sum(v for v, _ in per_block.values())
    by_function = collections.Counter()
    for v, s in per_block.values():
        by_function[names.get(s, s)] += v
    with open(blocks_out, "w") as f:
        for (vaddr, insns), (v, s) in sorted(per_block.items(), key=lambda x: -x[1][0]):
            f.write(f"{vaddr:x} {insns} {v:.0f} {names.get(s, s)}\n")
    print(f"{total / 1e6:8.2f} M instructions per inference, by function:")
    for name, v in by_function.most_common(25):
        print(f"{v / 1e6:8.3f} M  {v / total:6.1%}  {name[:100]}")


if __name__ == "__main__":
    main()
