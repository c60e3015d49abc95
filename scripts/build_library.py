#!/usr/bin/env python
"""Build the crystal library shipped in ``assets/library/`` from Materials Project JSON Lines.

    python scripts/build_library.py                                   # ../shared/data/mp_crystals, sen_mp
    nice -n 15 nohup python scripts/build_library.py > .cache/library_build.log 2>&1 &   # the full build
    python scripts/build_library.py --data tiny.jsonl.gz --split split.json --out /tmp/lib.parquet --work /tmp/w

Two stages, the first resumable:

1. **Predict** (``--work``/chunks): the input is read in order, in chunks of ``--chunk`` crystals; each
   chunk's crystals are read as the model reads them (:func:`sen.io.read_structure`: wrapped into the
   cell, validated), predicted with the model and its crystal features taken in the same pass
   (:func:`sen.library.network_features`), and written as one Parquet file (to a temporary name, then
   renamed). A re-run skips the chunks already there; the work folder records the input files and the
   model's sha256 and is refused for another input or model (``--overwrite`` starts again).
2. **Assemble** (seconds): split labels from the model's ``split.json`` (ids not in it: ``none``), a PCA
   of the standardised features fitted on the training crystals (``--dims`` components), the
   applicability-domain measurement on the test split (distance to the nearest training crystal against
   the model's error: MAE by distance quartile, Spearman, the ``--domain-quantile`` threshold; the same on
   the validation split), and the library file written with zstd (embedding in half precision; byte-stream
   split for coordinates, lattices and embeddings), with the model version, PCA and measurements in its
   metadata.

Input: gzip or plain JSON Lines (a file or a folder of ``*.jsonl*``) with ``material_id``, ``band_gap``,
``formation_energy_per_atom`` and ``cif``.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sen import library as lib  # noqa: E402
from sen.errors import StructureError  # noqa: E402

CHUNK_SCHEMA_FIELDS = [
    ("material_id", pa.string()),
    ("band_gap", pa.float64()),
    ("formation_energy_per_atom", pa.float64()),
    ("formula", pa.string()),
    ("elements", pa.string()),
    ("n_elements", pa.uint8()),
    ("n_atoms", pa.uint16()),
    ("space_group_symbol", pa.string()),
    ("space_group_number", pa.uint8()),
    ("crystal_system", pa.string()),
    ("pred_band_gap", pa.float32()),
    ("pred_band_gap_std", pa.float32()),
    ("pred_formation_energy_per_atom", pa.float32()),
    ("pred_formation_energy_per_atom_std", pa.float32()),
    ("metal_probability", pa.float32()),
    ("error", pa.string()),
    ("lattice", pa.list_(pa.float64(), 9)),
    ("species", pa.list_(pa.uint8())),
    ("frac", pa.list_(pa.int32())),
]
PREDICTION_KEYS = {
    "pred_band_gap": "band_gap",
    "pred_band_gap_std": "band_gap_std",
    "pred_formation_energy_per_atom": "formation_energy_per_atom",
    "pred_formation_energy_per_atom_std": "formation_energy_per_atom_std",
    "metal_probability": "metal_probability",
}


def input_files(data: Path) -> list[Path]:
    """The JSON Lines files of ``data`` (a file, or a folder's ``*.jsonl*`` in name order)."""
    files = sorted(data.glob("*.jsonl*")) if data.is_dir() else [data]
    if not files or not all(f.is_file() for f in files):
        raise SystemExit(f"error: no JSON Lines input at {data}")
    return files


def read_records(files: list[Path]) -> list[dict]:
    """Every record (material_id, band_gap, formation_energy_per_atom, cif), in input order."""
    records = []
    for f in files:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    records.append({k: row.get(k) for k in ("material_id", "band_gap", "formation_energy_per_atom", "cif")})
    ids = [r["material_id"] for r in records]
    if len(set(ids)) != len(ids):
        raise SystemExit("error: the input repeats material ids")
    return records


def _float(v) -> float:
    return float("nan") if v is None else float(v)


def crystal_row(rec: dict) -> tuple[dict, object]:
    """A chunk row for one record (DFT values, composition, structure) and its Structure (None if unusable)."""
    from sen.io import read_structure

    row = dict.fromkeys(name for name, _ in CHUNK_SCHEMA_FIELDS)
    row.update(material_id=str(rec["material_id"]), band_gap=_float(rec["band_gap"]),
               formation_energy_per_atom=_float(rec["formation_energy_per_atom"]))  # fmt: skip
    try:
        s = read_structure((rec["cif"] or "").encode("utf-8"), fmt="cif")
    except StructureError as exc:
        row["error"] = str(exc)
        return row, None
    comp = s.composition
    row.update(
        formula=comp.reduced_formula,
        elements=" ".join(sorted(str(e) for e in comp.elements)),
        n_elements=len(comp.elements),
        n_atoms=len(s),
        lattice=s.lattice.matrix.astype(np.float64).reshape(9).tolist(),
        species=[site.specie.Z for site in s],
        frac=np.rint(s.frac_coords * lib.FRAC_SCALE).astype(np.int64).reshape(-1).tolist(),
    )
    return row, s


def predict_chunk(predictor, records: list[dict], batch_size: int = 64) -> pa.Table:
    """Read, predict and featurise one chunk of records: a table of CHUNK_SCHEMA_FIELDS plus ``features``."""
    from sen.graph import collate
    from sen.symmetry import crystal_system_of

    rows, structures = zip(*(crystal_row(r) for r in records), strict=True)
    rows = list(rows)
    features: list[np.ndarray | None] = [None] * len(rows)
    good = [i for i, s in enumerate(structures) if s is not None]
    for start in range(0, len(good), batch_size):
        idx = good[start : start + batch_size]
        try:
            pieces = [(idx, predictor._graphs([structures[i] for i in idx]))]
        except (StructureError, ValueError):  # one crystal the featuriser refuses: find it, keep the others
            pieces = []
            for i in idx:
                try:
                    pieces.append(([i], predictor._graphs([structures[i]])))
                except (StructureError, ValueError) as exc:
                    rows[i]["error"] = str(exc)
        for ids, (graphs, reports) in pieces:
            out, feats = lib.network_features(predictor, collate(graphs).to(predictor.device))
            for j, (i, pred, report) in enumerate(zip(ids, predictor._rows(out, len(ids)), reports, strict=True)):
                rows[i].update({col: pred.get(key) for col, key in PREDICTION_KEYS.items()})
                rows[i].update(space_group_symbol=report.space_group_symbol,
                               space_group_number=report.space_group_number,
                               crystal_system=crystal_system_of(report.space_group_number))  # fmt: skip
                features[i] = feats[j]
    width = next((f.shape[0] for f in features if f is not None), 0)
    blank = np.full(width, np.nan, dtype=np.float32)
    flat = np.concatenate([f if f is not None else blank for f in features]).astype(np.float32)
    schema = pa.schema(CHUNK_SCHEMA_FIELDS)
    table = pa.Table.from_pylist(rows, schema=schema)
    return table.append_column("features", pa.FixedSizeListArray.from_arrays(pa.array(flat), width))


def stage_predict(args, predictor, records: list[dict], manifest: dict) -> list[Path]:
    """Stage 1: one Parquet file per chunk under ``<work>/chunks``, skipping those already written."""
    work = Path(args.work)
    chunks = work / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    mpath = work / "manifest.json"
    if mpath.exists() and not args.overwrite:
        old = json.loads(mpath.read_text())
        if old != manifest:
            raise SystemExit(f"error: {work} holds a build of another input, model or chunk size; "
                             "pass --overwrite to start again")  # fmt: skip
    elif args.overwrite:
        for f in chunks.glob("chunk-*.parquet"):
            f.unlink()
    mpath.write_text(json.dumps(manifest, indent=1))
    n_chunks = math.ceil(len(records) / args.chunk)
    paths, t0, done_now = [], time.time(), 0
    for c in range(n_chunks):
        path = chunks / f"chunk-{c:05d}.parquet"
        paths.append(path)
        if path.exists():
            continue
        table = predict_chunk(predictor, records[c * args.chunk : (c + 1) * args.chunk], args.batch_size)
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        done_now += table.num_rows
        rate = (time.time() - t0) / done_now
        left = sum(1 for p in (chunks / f"chunk-{k:05d}.parquet" for k in range(c + 1, n_chunks)) if not p.exists())
        print(f"chunk {c + 1}/{n_chunks}: {table.num_rows} crystals, {rate * 1000:.0f} ms each, "
              f"about {left * args.chunk * rate / 60:.1f} min left", flush=True)  # fmt: skip
    return paths


def load_split(path: Path) -> dict[str, str]:
    """material id -> ``train`` / ``validation`` / ``test`` from a ``split.json``."""
    split = json.loads(path.read_text())
    labels = {}
    for key, label in (("train", "train"), ("val", "validation"), ("test", "test")):
        for mid in split.get(key, []):
            labels[str(mid)] = label
    return labels


def fit_pca(features: np.ndarray, dims: int) -> dict:
    """Standardise (mean and spread of the fitting rows) and PCA: ``mean``, ``scale``, ``components`` (k, F)."""
    mean = features.mean(0)
    scale = features.std(0)
    scale = np.where(scale > 1e-6 * max(float(scale.max()), 1e-30), scale, 1.0)
    z = (features - mean) / scale
    _, sing, vt = np.linalg.svd(z, full_matrices=False)
    k = max(1, min(dims, vt.shape[0]))
    var = sing**2
    return {"mean": mean, "scale": scale, "components": vt[:k],
            "explained_variance_ratio": float(var[:k].sum() / max(var.sum(), 1e-30))}  # fmt: skip


def nearest_distance(queries: np.ndarray, refs: np.ndarray, block: int = 2048) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row."""
    ref_sq = (refs**2).sum(1)
    out = np.empty(len(queries))
    for s in range(0, len(queries), block):
        q = queries[s : s + block]
        d2 = (q**2).sum(1)[:, None] + ref_sq[None, :] - 2.0 * q @ refs.T
        out[s : s + block] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def domain_measure(emb: np.ndarray, table: pa.Table, split: np.ndarray, quantile: float, part: str = "test") -> dict:
    """Distance from each crystal of ``part`` (test or validation) to its nearest training crystal against the
    model's errors on it: MAE by distance quartile, Spearman, the ``quantile`` threshold."""
    from scipy.stats import spearmanr

    ok = np.isfinite(emb).all(1)
    train, test = (split == "train") & ok, (split == part) & ok
    if train.sum() < 1 or test.sum() < 2:
        return {"n_test": int(test.sum()), "threshold": None, "quantile": quantile}
    dist = nearest_distance(emb[test].astype(np.float64), emb[train].astype(np.float64))
    threshold = float(np.quantile(dist, quantile))
    edges = np.quantile(dist, [0.25, 0.5, 0.75])
    quart = np.searchsorted(edges, dist, side="right")
    result = {"n_test": int(test.sum()), "n_train": int(train.sum()), "quantile": quantile, "threshold": threshold,
              "distance_quartile_edges": [float(x) for x in edges],
              "distance_median": float(np.median(dist)), "targets": {}}  # fmt: skip
    dft_gap = table.column("band_gap").to_numpy(zero_copy_only=False)[test]
    for t, rows in (*((t, slice(None)) for t in lib.TARGETS), ("band_gap_insulators", dft_gap > 0)):
        col = t.replace("_insulators", "")
        err = np.abs(table.column("pred_" + col).to_numpy(zero_copy_only=False)[test].astype(np.float64)
                     - table.column(col).to_numpy(zero_copy_only=False)[test])[rows]  # fmt: skip
        d, q = dist[rows], quart[rows]
        if len(d) < 3:
            continue
        rho = spearmanr(d, err).statistic
        far = d > threshold
        result["targets"][t] = {
            "n": int(len(d)),
            "mae": float(err.mean()),
            "mae_by_distance_quartile": [float(err[q == k].mean()) if (q == k).any() else None for k in range(4)],
            "mae_above_threshold": float(err[far].mean()) if far.any() else None,
            "mae_below_threshold": float(err[~far].mean()) if (~far).any() else None,
            "spearman_distance_error": float(rho),
        }
    return result


def stage_assemble(args, chunk_paths: list[Path], model_path: Path, model_sha: str, files: list[Path]) -> Path:
    """Stage 2: split labels, PCA, domain measurement, the library file."""
    table = pa.concat_tables([pq.read_table(p) for p in chunk_paths])
    features = np.asarray(table.column("features").combine_chunks().flatten().to_numpy(), dtype=np.float32)
    features = features.reshape(table.num_rows, -1)
    table = table.drop_columns(["features"])
    labels = load_split(Path(args.split) if args.split else model_path.parent / "split.json")
    split = np.array([labels.get(m, "none") for m in table.column("material_id").to_pylist()])
    usable = np.isfinite(features).all(1)
    fit = (split == "train") & usable
    if fit.sum() < 2:
        raise SystemExit("error: fewer than 2 usable training crystals to fit the PCA on")
    pca = fit_pca(features[fit].astype(np.float64), args.dims)
    emb = ((features - pca["mean"]) / pca["scale"]) @ pca["components"].T
    emb = np.where(usable[:, None], emb, np.nan).astype(np.float16)  # as stored: half precision (2 bytes a value)
    if np.isinf(emb).any():
        raise SystemExit("error: an embedding value overflows half precision")
    domain = domain_measure(emb.astype(np.float32), table, split, args.domain_quantile)
    domain_val = domain_measure(emb.astype(np.float32), table, split, args.domain_quantile, part="validation")
    table = table.append_column("split", pa.array(split).dictionary_encode())
    table = table.append_column("embedding", pa.FixedSizeListArray.from_arrays(
        pa.array(emb.reshape(-1), type=pa.float16()), emb.shape[1]))  # fmt: skip
    for name in ("crystal_system",):
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).dictionary_encode())
    meta = {
        "format_version": lib.FORMAT_VERSION,
        "model_name": model_path.parent.name,
        "model_sha256": model_sha,
        "built": datetime.date.today().isoformat(),
        "source": [f.name for f in files],
        "n_crystals": table.num_rows,
        "n_unusable": int((~usable).sum()),
        "frac_scale": lib.FRAC_SCALE,
        "embedding": {"features": int(features.shape[1]), "dims": int(emb.shape[1]),
                      "explained_variance_ratio": pca["explained_variance_ratio"],
                      "fitted_on": f"train split ({int(fit.sum())} crystals)",
                      "mean": lib.encode_array(pca["mean"]), "scale": lib.encode_array(pca["scale"]),
                      "components": lib.encode_array(pca["components"])},  # fmt: skip
        "domain": domain,
        "domain_validation": domain_val,
        "licence": "Materials Project data, CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
        "citation": "A. Jain et al., APL Materials 1, 011002 (2013)",
    }
    table = table.replace_schema_metadata({lib.META_KEY: json.dumps(meta).encode("utf-8")})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    numeric = ["frac", "lattice", "embedding"]  # byte-stream split: a third smaller than plain zstd for these
    pq.write_table(table, tmp, compression="zstd", compression_level=19, row_group_size=1 << 20,
                   use_dictionary=[c for c in table.column_names if c not in numeric],
                   column_encoding=dict.fromkeys(numeric, "BYTE_STREAM_SPLIT"))  # fmt: skip
    os.replace(tmp, out)
    print(f"wrote {out}: {table.num_rows} crystals, {out.stat().st_size / 1e6:.2f} MB; "
          f"{meta['n_unusable']} without prediction", flush=True)  # fmt: skip
    for name, d in (("test", domain), ("validation", domain_val)):
        if d.get("threshold") is not None:
            print(f"applicability domain ({name} split): " + json.dumps(d), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line of the build."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_crystals"))
    p.add_argument("--model", default="sen_mp", help="a shipped model's name or a model.pt (default sen_mp)")
    p.add_argument("--split", default=None, help="split.json (default: the one beside the model)")
    p.add_argument("--out", default=str(lib.DEFAULT_LIBRARY))
    p.add_argument("--work", default=str(ROOT / ".cache" / "library_build"),
                   help="folder of the resumable chunks (default .cache/library_build; not build/, which packaging clears)")
    p.add_argument("--chunk", type=int, default=500, help="crystals per chunk file (default 500)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dims", type=int, default=32, help="PCA components of the embedding (default 32)")
    p.add_argument("--domain-quantile", type=float, default=0.9)
    p.add_argument("--limit", type=int, default=None, help="only the first N crystals (a try-out)")
    p.add_argument("--overwrite", action="store_true", help="discard the chunks of an earlier build")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import torch

    from sen.checkpoint import resolve_model_path
    from sen.predict import Predictor

    torch.set_num_threads(max(1, int(os.environ.get("SEN_THREADS", "1"))))
    files = input_files(Path(args.data))
    records = read_records(files)[: args.limit]
    model_path = resolve_model_path(args.model)
    model_sha = lib.file_sha256(model_path)
    manifest = {"files": [[f.name, f.stat().st_size] for f in files], "n_records": len(records),
                "chunk": args.chunk, "model_sha256": model_sha}  # fmt: skip
    predictor = Predictor.load(model_path, device=args.device)
    print(f"{len(records)} crystals from {len(files)} file(s); model {model_path} (sha256 {model_sha[:12]})", flush=True)
    chunk_paths = stage_predict(args, predictor, records, manifest)
    stage_assemble(args, chunk_paths, model_path, model_sha, files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
