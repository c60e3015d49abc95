"""Long fuzzing run of sen.io: 20,000+ inputs, each answered in a worker process with a timeout and a
memory cap, so that hangs and explosions are counted instead of stopping the run.

Inputs: byte mutations and truncations of assets/examples/*.cif (read as CIF, POSCAR, XYZ or JSON),
and generated hostile files (symmetry loops that explode, huge / non-finite numbers, billion-atom
count lines, odd unicode, very long lines, deep JSON, files up to the 5 MB limit). Each answer must be
a Structure that passes validate_structure, or a StructureError; anything else is an escape.

    nice -n 10 python benchmarks/fuzz_io.py --inputs 20000 --workers 1

writes benchmarks/results/fuzz_io.json (inputs, clean errors, accepted, escapes, answers over the
2 s budget, timeouts, the slowest case, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {p.name: p.read_bytes() for p in sorted((ROOT / "assets" / "examples").glob("*.cif"))}
BUDGET_S = 2.0  # every input must be answered within this
HARD_TIMEOUT_S = 20.0  # the harness kills a worker that has not answered by then (counted as a timeout)
WORKER_MEMORY = 6 * 1024**3  # address-space cap of each harness worker (bytes)
NAMES = ["x.cif", "POSCAR", "x.vasp", "x.xyz", "x.json", None]
NUMBERS = ["0", "-0", "200", "-200", "1e3", "1e4", "1e308", "-1e308", "1e-308", "nan", "inf", "-inf", "1e999",
           "99999999999999999999", "1(2)", "?", ".", "1_0", "\u0661", "0.333", "0.6667", "1000000000"]  # fmt: skip
TOKENS = [b"loop_\n", b"_atom_site_label\n", b"_symmetry_equiv_pos_as_xyz\n", b"'x, y, z'\n", b"data_x\n", b";\n",
          b"'", b'"', b"#", b"\n", b"\r", b"\t", b"_cell_length_a 0\n", b"_symmetry_Int_Tables_number 225\n",
          b"_space_group_name_Hall '-F 4 2 3'\n", "é".encode(), "\u2028".encode(), b"\xff\xfe", b"\x1c", b"\x00",
          b"_atom_site_occupancy\n", b"'x' 'y' 'z' ", b"'x 'x 'x 'x "]  # fmt: skip
SYMBOLS = ["P 1", "F m -3 m", "I a -3 d", "P 6/m m m", "R -3 c", "F d -3 m", "P 21/c", "I m -3 m", "Q 9"]


# ----------------------------------------------------------------------------- inputs


def mutate(rng: random.Random) -> tuple[str, bytes, str | None]:
    """A byte-mutated or truncated example file, with the name it is read as."""
    name = rng.choice(sorted(EXAMPLES))
    data = bytearray(EXAMPLES[name])
    ops = []
    for _ in range(rng.randint(1, 8)):
        op = rng.choice(["flip", "insert", "delete", "token", "number", "truncate", "repeat"])
        ops.append(op)
        i = rng.randrange(max(1, len(data)))
        if op == "flip" and data:
            data[i] = rng.randrange(256)
        elif op == "insert":
            data[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == "delete":
            del data[i : i + rng.randint(1, 80)]
        elif op == "token":
            data[i:i] = rng.choice(TOKENS)
        elif op == "number":
            j = data.find(b" ", i)
            if j != -1:
                data[j + 1 : j + 1] = rng.choice(NUMBERS).encode() + b" "
        elif op == "truncate":
            del data[i:]
        elif op == "repeat":
            end = data.find(b"\n", i)
            line = bytes(data[i : end + 1 if end != -1 else len(data)])
            data[i:i] = line * rng.choice([2, 10, 500, 5000])
    filename = rng.choice([name, name, *NAMES])
    return f"mutation of {name} ({'+'.join(ops)}) read as {filename}", bytes(data[: 5 * 1024**2]), filename


def cif_text(symbol: str, rows: list[tuple], cell: tuple = (20, 20, 20, 90, 90, 90)) -> bytes:
    keys = ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")
    head = f"data_h\n_symmetry_space_group_name_H-M '{symbol}'\n"
    head += "".join(f"_cell_{k} {v}\n" for k, v in zip(keys, cell, strict=True))
    head += "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
    return (head + "".join(f"Na{i} Na {x} {y} {z}\n" for i, (x, y, z) in enumerate(rows))).encode()


def hostile(rng: random.Random) -> tuple[str, bytes, str | None]:
    """A generated hostile file."""
    kinds = {"symmetry": 20, "numbers": 15, "counts": 10, "xyz": 10, "unicode": 10, "long_line": 4, "deep_json": 5,
             "json": 15, "big_file": 1, "quotes": 3, "blank_lines": 2, "poscar_lattice": 5}  # fmt: skip
    kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
    r = rng.random
    if kind == "symmetry":
        symbol = rng.choice(SYMBOLS)
        n = rng.choice([1, 2, 5, 20, 100, 400, 2000, 30000])
        rows = [(f"{r():.5f}", f"{r():.5f}", f"{r():.5f}") for _ in range(n)]
        return f"{n} sites in {symbol}", cif_text(symbol, rows), "h.cif"
    if kind == "numbers":
        rows = [tuple(rng.choice([*NUMBERS, f"{r():.4f}"]) for _ in range(3)) for _ in range(rng.randint(1, 30))]
        cell = tuple(rng.choice([*NUMBERS, "5", "90", "120", "250", "0.5"]) for _ in range(6))
        return f"CIF with hostile numbers {cell}", cif_text(rng.choice(SYMBOLS), rows, cell), "n.cif"
    if kind == "counts":
        counts = " ".join(str(rng.choice([1, 2, 500, 501, 10**9, 10**18, -1, 0])) for _ in range(rng.randint(1, 3)))
        scale = rng.choice(["1.0", "-1.0", "-1e-30", "1e308", "0", "nan"])
        lat = " ".join(rng.choice(NUMBERS + ["5", "0"]) for _ in range(9))
        text = f"x\n{scale}\n{lat[:len(lat)//3]}\n5 0 0\n0 5 0\n0 0 5\nNa Cl O\n{counts}\nDirect\n0 0 0\n0.5 0.5 0.5\n"
        return f"POSCAR counts {counts} scale {scale}", text.encode(), "POSCAR"
    if kind == "xyz":
        n = rng.choice([1, 2, 500, 501, 10**9, -3])
        pad = "x" * rng.choice([0, 100, 10_000, 1_000_000])
        lat = " ".join(rng.choice(NUMBERS + ["5", "0"]) for _ in range(9))
        text = f'{n}\nLattice="{lat}" Properties=species:S:1:pos:R:3 pbc="T T T" c="{pad}"\nNa 0 0 0\nCl 2 2 2\n'
        return f"XYZ count {n}, comment {len(pad)} chars", text.encode(), "h.xyz"
    if kind == "unicode":
        base = bytearray(rng.choice(list(EXAMPLES.values())))
        for _ in range(rng.randint(1, 20)):
            i = rng.randrange(len(base))
            base[i:i] = chr(rng.choice([0x85, 0x2028, 0x202E, 0xFEFF, 0x1F600, 0x0661, 0xD7FF, rng.randrange(0x80, 0x10FFFF)])).encode(
                "utf-8", "surrogatepass"
            )
        return "unicode inserted into an example", bytes(base), rng.choice(NAMES)
    if kind == "long_line":
        n = rng.choice([10_000, 100_000, 1_000_000, 4_000_000])
        line = rng.choice([b"a", b"'x ", b"1 ", b"_x ", b"(", b"#"]) * (n // 2)
        return f"CIF with a {len(line):,}-byte line", b"data_x\n_cell_length_a " + line + b"\n" + EXAMPLES["cscl.cif"], "l.cif"
    if kind == "deep_json":
        depth = rng.choice([10, 100, 1000, 10_000, 100_000])
        opener = rng.choice(["[", '{"a":'])
        closer = "]" if opener == "[" else "}"
        return f"JSON nested {depth} deep", (opener * depth + "1" + closer * depth).encode(), "d.json"
    if kind == "json":
        sites = [{"species": [{"element": rng.choice(["Na", "Cl", "X", "this", "os"]), "occu": rng.choice([1, 0.5, "1"])}],
                  "abc": [rng.choice([0.1, 200, 1e308, float("nan"), "x"]) for _ in range(3)],
                  "properties": rng.choice([{}, {"m": 1.0}, {"m": {"@module": "this", "@class": "x"}},
                                            {"m": {"@module": "os", "@callable": "system"}}])}  # fmt: skip
                 for _ in range(rng.randint(0, 600))]  # fmt: skip
        lattice = rng.choice([{"matrix": [[5, 0, 0], [0, 5, 0], [0, 0, 5]]}, {"matrix": [[1e6, 0, 0], [0, 5, 0], [0, 0, 5]]},
                              {"a": 5, "b": 5, "c": 5, "alpha": 90, "beta": 90, "gamma": 0.01}, {"@module": "os"}, []])  # fmt: skip
        return f"JSON with {len(sites)} sites", json.dumps({"lattice": lattice, "sites": sites}).encode(), "j.json"
    if kind == "big_file":
        unit = rng.choice(list(EXAMPLES.values()))
        data = (unit * (5 * 1024**2 // len(unit)))[: 5 * 1024**2 - rng.randrange(2)]
        return f"{len(data):,}-byte file of repeated examples", data, rng.choice(["big.cif", "POSCAR", None])
    if kind == "quotes":
        line = b"'x " * rng.choice([100, 1000, 10_000, 300_000])
        return f"CIF line of {len(line):,} bytes of unclosed quotes", EXAMPLES["cscl.cif"] + b"_note " + line + b"\n", "q.cif"
    if kind == "blank_lines":
        blank = b"\n" * rng.choice([1000, 100_000, 4_000_000])
        return f"CIF with {len(blank):,} blank lines", b"data_x\n" + blank + EXAMPLES["cscl.cif"], "b.cif"
    lat = rng.choice(["1e5 0 0\n0 1e5 0\n0 0 1e5", "500 0 0\n499.98 4.36 0\n0 0 500", "1000 0 0\n0 1000 0\n0 0 1000",
                      "3 0 0\n170 3 0\n170 170 3", "0.1 0 0\n0 0.1 0\n0 0 0.1", "5 0 0\n5 1e-9 0\n0 0 5"])  # fmt: skip
    frac = rng.choice(["200 200 200", "0.5 0.5 0.5", "1e3 0 0", "1e308 0 0", "-1e-300 0 0"])
    text = f"x\n1.0\n{lat}\nNa Cl\n1 1\nDirect\n0 0 0\n{frac}\n"
    return f"POSCAR lattice {lat.splitlines()[0]}... atom at {frac}", text.encode(), "POSCAR"


def generate(n: int, seed: int):
    rng = random.Random(seed)
    for i in range(n):
        yield (*(mutate(rng) if i % 2 == 0 else hostile(rng)),)


# ----------------------------------------------------------------------------- worker


def _worker(conn) -> None:
    """Answer inputs from the pipe: ('accepted' | 'error' | 'escape', seconds, detail)."""
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, resource.RLIM_INFINITY))
    from sen.errors import StructureError
    from sen.io import read_structure, validate_structure

    while True:
        item = conn.recv()
        if item is None:
            break
        data, filename = item
        t = time.perf_counter()
        cpu = time.process_time() + _children_cpu()
        try:
            s = read_structure(data, filename=filename)
            validate_structure(s)
            kind, detail = "accepted", f"{len(s)} atoms"
        except StructureError as exc:
            msg = str(exc)
            kind = "error" if msg and "\n" not in msg else "escape"
            detail = msg[:300]
        except BaseException as exc:  # noqa: BLE001 - counting these is the point
            kind, detail = "escape", f"{type(exc).__name__}: {str(exc)[:200]} | {traceback.format_exc()[-600:]}"
        elapsed = time.perf_counter() - t
        cpu = time.process_time() + _children_cpu() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
        conn.send((kind, elapsed, detail, peak, peak_children, cpu))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the bounded parses' forked children
    return usage.ru_utime + usage.ru_stime


class Harness:
    """One worker process at a time, restarted after a timeout or a crash."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("fork")
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()

    def answer(self, data: bytes, filename: str | None):
        self.conn.send((data, filename))
        t = time.perf_counter()
        if self.conn.poll(HARD_TIMEOUT_S):
            try:
                return self.conn.recv()
            except EOFError:
                pass
            kind = "crash"
        else:
            kind = "timeout"
        elapsed = time.perf_counter() - t
        self.proc.kill()
        self.proc.join()
        self._start()
        return kind, elapsed, f"worker {kind}", 0, 0, elapsed

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--workers", type=int, default=1, help="only 1 is supported (one shared core)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_io.json")
    ap.add_argument("--save-failures", type=Path, default=None, help="write escaping / slow inputs here")
    args = ap.parse_args()
    import sen.io  # noqa: F401 - import once in the parent; workers are forked from it

    warm = Harness()  # first use of each reader imports its library: not part of any input's time
    for data, name in ((EXAMPLES["cscl.cif"], "w.cif"), (b"x\n1.0\n4 0 0\n0 4 0\n0 0 4\nNa\n1\nDirect\n0 0 0\n", "POSCAR"),
                       (b'1\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"\nNa 0 0 0\n', "w.xyz")):  # fmt: skip
        warm.answer(data, name)
    harness = warm
    counts = {"accepted": 0, "error": 0, "escape": 0, "timeout": 0, "crash": 0}
    over_budget, escapes = [], []
    slowest = (0.0, "")
    slowest_cpu = (0.0, "")
    over_budget_cpu = 0
    peak = peak_children = 0
    by_kind: dict[str, int] = {}
    t0 = time.perf_counter()
    state = {"counts": counts, "over_budget": over_budget, "escapes": escapes, "by_kind": by_kind, "t0": t0,
             "slowest": lambda: slowest, "slowest_cpu": lambda: slowest_cpu, "peak": lambda: peak,
             "peak_children": lambda: peak_children, "over_budget_cpu": lambda: over_budget_cpu}  # fmt: skip
    for i, (desc, data, filename) in enumerate(generate(args.inputs, args.seed)):
        kind, seconds, detail, rss, rss_children, cpu = harness.answer(data, filename)
        over_budget_cpu += cpu > BUDGET_S
        if cpu > slowest_cpu[0]:
            slowest_cpu = (cpu, f"{desc} ({len(data):,} bytes): {kind}: {detail[:160]}")
        counts[kind] += 1
        by_kind[desc.split(" ")[0]] = by_kind.get(desc.split(" ")[0], 0) + 1
        peak, peak_children = max(peak, rss), max(peak_children, rss_children)
        if seconds > slowest[0]:
            slowest = (seconds, f"{desc} ({len(data):,} bytes): {kind}: {detail[:160]}")
        if seconds > BUDGET_S or kind in ("escape", "timeout", "crash"):
            record = {"input": i, "what": desc, "bytes": len(data), "kind": kind, "seconds": round(seconds, 3),
                      "cpu_seconds": round(cpu, 3), "detail": detail[:400]}  # fmt: skip
            (escapes if kind in ("escape", "crash") else over_budget).append(record)
            if args.save_failures:
                args.save_failures.mkdir(parents=True, exist_ok=True)
                (args.save_failures / f"fuzz{i:05d}__{filename or 'noname'}").write_bytes(data)
        if (i + 1) % 1000 == 0:
            print(f"{i + 1:>6} inputs, {time.perf_counter() - t0:6.0f} s: {counts}", flush=True)
            state.update(done=i + 1)
            _write(args, state, complete=False)
    harness.close()
    state.update(done=args.inputs)
    _write(args, state, complete=True)


def _write(args, st: dict, complete: bool) -> None:
    """Write the results so far (a long run that is stopped still leaves its figures)."""
    counts, over_budget, escapes = st["counts"], st["over_budget"], st["escapes"]
    slowest, slowest_cpu, t0 = st["slowest"](), st["slowest_cpu"](), st["t0"]
    result = {
        "command": f"nice -n 10 python benchmarks/fuzz_io.py --inputs {args.inputs} --seed {args.seed} --workers 1",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "complete": complete,
        "inputs_tried": st["done"],
        "clean_errors": counts["error"],
        "accepted": counts["accepted"],
        "escaped_other_exceptions": counts["escape"] + counts["crash"],
        "over_budget_2s_wall": len(over_budget),
        "over_budget_2s_cpu": st["over_budget_cpu"](),
        "timeouts": counts["timeout"],
        "harness_timeout_s": HARD_TIMEOUT_S,
        "slowest_case_wall": {"seconds": round(slowest[0], 3), "what": slowest[1]},
        "slowest_case_cpu": {"seconds": round(slowest_cpu[0], 3), "what": slowest_cpu[1]},
        "note": "wall seconds include waiting for the CPU on a shared 2-core machine; cpu seconds are the "
        "worker's and its bounded-parse children's own time",
        "peak_rss_mb_worker": st["peak"](),
        "peak_rss_mb_bounded_parse_children": st["peak_children"](),
        "wall_s": round(time.perf_counter() - t0, 1),
        "inputs_by_generator": st["by_kind"],
        "escapes": escapes[:20],
        "over_budget": over_budget[:20],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if complete:
        print(json.dumps({k: v for k, v in result.items() if k not in ("escapes", "over_budget")}, indent=2))


if __name__ == "__main__":
    main()
