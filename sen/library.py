"""A library of known crystals: search, open, compare with DFT, and the nearest known crystals.

The shipped library (``assets/library/mp_crystals.parquet``, built by ``scripts/build_library.py``)
holds the 33,064 Materials Project crystals the shipped model ``sen_mp`` was trained and tested on:
for each, its id, reduced formula, elements, atoms, space group and crystal system, the DFT band gap
(eV) and formation energy (eV/atom), the structure (lattice matrix in float64, fractional coordinates
as int32 multiples of 1e-7, species as atomic numbers), which part of the model's split it belongs
to (``train`` / ``validation`` / ``test``, or ``none`` for the few the training loader rejected),
the model's predictions with their spread over the six networks, and an embedding: the model's own
crystal features (every network's output capsules and pooled atom features) reduced by a PCA fitted
on the training crystals (stored in half precision). The PCA, the model version (sha256 of ``model.pt``) and the
applicability-domain measurements are in the file's metadata.

* :meth:`Library.load`, :meth:`Library.search` (formula, elements, only these elements, space group,
  crystal system, band-gap and formation-energy ranges, metal / insulator), :meth:`Library.get`,
  :meth:`Library.structure`, :meth:`Library.nearest`;
* the ``sen library`` command (:func:`add_library_parser`, :func:`run_library`).

Data: Materials Project, CC BY 4.0; cite A. Jain et al., APL Materials 1, 011002 (2013).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sen.targets import TARGET_UNITS

#: The shipped library file; ``SEN_LIBRARY`` points elsewhere.
DEFAULT_LIBRARY = Path(
    os.environ.get("SEN_LIBRARY", Path(__file__).resolve().parent.parent / "assets" / "library" / "mp_crystals.parquet")
)
#: Key of the library's metadata (JSON) in the Parquet schema.
META_KEY = b"sen_library"
#: Version of the file layout written by ``scripts/build_library.py``; :meth:`Library.load` refuses others.
FORMAT_VERSION = 1
#: Fractional coordinates are stored as integers: round(frac * FRAC_SCALE) (exact to 5e-8).
FRAC_SCALE = 10_000_000
#: Split labels, as stored (``split.json`` says ``val`` for ``validation``).
SPLITS = ("train", "validation", "test", "none")
#: Columns held in memory for queries (the structure columns are read when first needed).
INDEX_COLUMNS = (
    "material_id", "formula", "elements", "n_elements", "n_atoms", "space_group_symbol", "space_group_number",
    "crystal_system", "band_gap", "formation_energy_per_atom", "split", "pred_band_gap", "pred_band_gap_std",
    "pred_formation_energy_per_atom", "pred_formation_energy_per_atom_std", "metal_probability", "error",
)  # fmt: skip
STRUCTURE_COLUMNS = ("lattice", "species", "frac")
TARGETS = ("band_gap", "formation_energy_per_atom")
UNITS = {t: TARGET_UNITS[t] for t in TARGETS}  # from sen.targets, the one table of units


class LibraryError(ValueError):
    """A library request that cannot be answered; the message is one line in the user's terms."""


# ----------------------------------------------------------------------------- the model's crystal features


def network_features(predictor, batch):
    """One pass of ``predictor``'s networks over ``batch``: its outputs and every crystal's features.

    Returns ``(out, features)``: ``out`` the model's outputs as :meth:`sen.predict.Predictor._forward`
    gives them (predictions, ``*_std``, ``metal_probability``), ``features`` a (B, M*(T+1)*C) float32
    numpy array: for each of the M networks, its ``crystal_features`` (:meth:`sen.model.SEN.forward`: the
    T output capsules each target's head reads and the pooled atom features, each of width C; 6 x 3 x 64
    = 1,152 for ``sen_mp``).
    """
    import torch

    from sen.predict import crystal_features

    with torch.inference_mode():
        out, outs = predictor._forward(batch, per_network=True)
    try:
        return out, crystal_features(outs)
    except ValueError as exc:
        raise LibraryError(str(exc)) from None


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (the model version recorded in the library); remembered per path, size and mtime."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def encode_array(a: np.ndarray) -> dict:
    """A float32 array as JSON-ready ``{"shape", "base64"}`` (for the library's metadata)."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: dict) -> np.ndarray:
    """The inverse of :func:`encode_array`."""
    return np.frombuffer(base64.b64decode(d["base64"]), dtype="<f4").reshape(d["shape"]).copy()


# ----------------------------------------------------------------------------- parsing what users type


def parse_range(text: str | tuple | None, what: str = "range") -> tuple[float, float] | None:
    """``"1:3"`` -> (1.0, 3.0); either side may be empty (``"1:"``, ``":0.5"``); a (lo, hi) pair passes through.

    Raises:
        LibraryError: not of the form A:B with numbers (one line, with an example).
    """
    if text is None or text == "":
        return None
    if isinstance(text, tuple | list):
        lo, hi = text
        lo = -math.inf if lo is None else float(lo)
        hi = math.inf if hi is None else float(hi)
    else:
        parts = str(text).split(":")
        if len(parts) != 2:
            raise LibraryError(f"malformed {what} {str(text)[:40]!r}: use A:B, e.g. 1:3 (either side may be empty)")
        try:
            lo = float(parts[0]) if parts[0].strip() else -math.inf
            hi = float(parts[1]) if parts[1].strip() else math.inf
        except ValueError:
            raise LibraryError(f"malformed {what} {str(text)[:40]!r}: use A:B with numbers, e.g. 1:3") from None
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise LibraryError(f"malformed {what} {str(text)[:40]!r}: the lower end must not be above the upper end")
    return lo, hi


def _element_symbol(token: str) -> str | None:
    from pymatgen.core.periodic_table import Element

    symbol = token[:1].upper() + token[1:].lower()
    return symbol if Element.is_valid_symbol(symbol) else None


def parse_query(text: str) -> tuple[str, object]:
    """What a search box holds: ``("elements", [...])`` or ``("formula", reduced formula)``.

    Several element symbols (separated by spaces, commas or hyphens: ``"Li Fe P O"``, ``"Li-Fe-O"``) or a
    single symbol (``"Fe"``) are elements; anything else is read as a formula (``"LiFePO4"``, ``"Fe2O3"``,
    ``"NaCl"``) and matched by its reduced formula.

    Raises:
        LibraryError: neither elements nor a formula.
    """
    text = (text or "").strip()
    tokens = [t for t in re.split(r"[\s,;\-]+", text) if t]
    if not tokens:
        raise LibraryError("empty search: give a formula (LiFePO4) or elements (Li Fe P O)")
    if len(tokens) > 1 or _element_symbol(tokens[0]):
        symbols = [_element_symbol(t) for t in tokens]
        bad = [t for t, s in zip(tokens, symbols, strict=True) if s is None]
        if bad:
            raise LibraryError(f"{bad[0][:20]!r} is not an element symbol (search for elements like: Li Fe P O)")
        return "elements", list(dict.fromkeys(symbols))
    return "formula", reduced_formula(tokens[0])


def reduced_formula(text: str) -> str:
    """The reduced formula as the library stores it (pymatgen's: ``"Fe4O6"`` -> ``"Fe2O3"``, ``"O"`` -> ``"O2"``).

    Raises:
        LibraryError: not a formula.
    """
    from pymatgen.core import Composition

    token = str(text).strip()
    try:
        if not re.fullmatch(r"[A-Za-z0-9().]{1,60}", token):
            raise ValueError
        comp = Composition(token)
        if not comp.elements or not all(_element_symbol(str(e)) == str(e) for e in comp.elements):
            raise ValueError  # pymatgen takes unknown symbols (Q, X) as dummy species
        return comp.reduced_formula
    except Exception:  # pymatgen raises ValueError, KeyError, ... for what is not a formula
        raise LibraryError(f"{token[:40]!r} is neither a formula (LiFePO4) nor elements (Li Fe P O)") from None


# ----------------------------------------------------------------------------- the library


@dataclass
class Neighbours:
    """The library crystals nearest to a query in the model's embedding, with the applicability-domain signal.

    ``rows``: a DataFrame, nearest first: ``distance``, ``material_id``, ``formula``, ``space_group``,
    ``band_gap`` and ``formation_energy_per_atom`` (DFT), the model's ``error_band_gap`` and
    ``error_formation_energy_per_atom`` on that crystal (prediction minus DFT), ``split``.
    ``threshold``: the distance that 90 % of test crystals are within of their nearest training crystal;
    ``warning``: a sentence when even the nearest library crystal is farther than that (else None).
    """

    rows: object
    threshold: float | None
    warning: str | None

    @property
    def nearest_distance(self) -> float:
        """Distance to the nearest library crystal."""
        return float(self.rows["distance"].iloc[0]) if len(self.rows) else math.inf

    @property
    def out_of_domain(self) -> bool:
        """True when even the nearest library crystal is farther than the threshold."""
        return self.warning is not None


class Library:
    """The crystal library: a table of known crystals with DFT values, predictions, structures and embeddings.

    Load it with :meth:`load`. ``frame`` is a pandas DataFrame of every crystal (not the structures);
    :meth:`search` filters it, :meth:`get` gives one row, :meth:`structure` the pymatgen Structure,
    :meth:`nearest` the most similar crystals.
    """

    def __init__(self, frame, embeddings: np.ndarray, meta: dict, path: Path | None = None):
        self.frame = frame
        self.embeddings = embeddings
        self.meta = meta
        self.path = path
        self._row = {m: i for i, m in enumerate(frame["material_id"])}
        self._usable = np.isfinite(embeddings).all(1)
        self._elements: np.ndarray | None = None
        self._structures: dict | None = None
        emb = meta.get("embedding", {})
        self._pca = {k: decode_array(emb[k]) for k in ("mean", "scale", "components") if k in emb}

    # -------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | Path | None = None) -> Library:
        """The shipped library (``SEN_LIBRARY`` or ``assets/library/mp_crystals.parquet``), or the file at ``path``.

        Raises:
            LibraryError: no such file, not a library file, or a layout of another version.
        """
        path = Path(path) if path is not None else DEFAULT_LIBRARY
        if not path.is_file():
            raise LibraryError(f"no crystal library at {path}; build one with scripts/build_library.py")
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
            raw = (pf.schema_arrow.metadata or {}).get(META_KEY)
            if raw is None:
                raise LibraryError(f"{path} is not a crystal library (no {META_KEY.decode()} metadata)")
            meta = json.loads(raw)
            if meta.get("format_version") != FORMAT_VERSION:
                raise LibraryError(f"{path} is a library of format {meta.get('format_version')}, this sen reads "
                                   f"{FORMAT_VERSION}; rebuild it with scripts/build_library.py")  # fmt: skip
            table = pf.read(columns=[*INDEX_COLUMNS, "embedding"])
        except LibraryError:
            raise
        except Exception as exc:  # ArrowInvalid, OSError, JSONDecodeError: a damaged or foreign file
            raise LibraryError(f"{path} is not a readable crystal library ({type(exc).__name__})") from None
        emb_col = table.column("embedding").combine_chunks()
        dims = emb_col.type.list_size
        embeddings = emb_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dims)
        frame = table.drop_columns(["embedding"]).to_pandas()
        for col in ("split", "crystal_system"):
            frame[col] = frame[col].astype(str)
        frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
        return cls(frame, embeddings, meta, path)

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, material_id: object) -> bool:
        return material_id in self._row

    @property
    def model_sha256(self) -> str:
        """sha256 of the ``model.pt`` whose predictions and embeddings the library holds."""
        return self.meta["model_sha256"]

    @property
    def model_name(self) -> str:
        """Name of that model (``sen_mp``)."""
        return self.meta.get("model_name", "sen_mp")

    @property
    def domain(self) -> dict:
        """The applicability-domain measurement on the test split (threshold, MAE by distance quartile, ...)."""
        return self.meta.get("domain", {})

    @property
    def threshold(self) -> float | None:
        """Distance beyond which a query is outside the model's experience (see :attr:`domain`)."""
        return self.domain.get("threshold")

    def check_model(self, model: str | Path | None = None) -> None:
        """Raise :class:`LibraryError` unless the library was built with ``model`` (default: the library's own,
        as shipped now): its predictions and embeddings would belong to another model."""
        from sen.checkpoint import resolve_model_path

        path = resolve_model_path(model or self.model_name)
        sha = file_sha256(path)
        if sha != self.model_sha256:
            raise LibraryError(f"the crystal library was built with model {self.model_sha256[:12]}, but {path} is "
                               f"{sha[:12]}; rebuild it with scripts/build_library.py")  # fmt: skip

    # -------------------------------------------------------------- queries

    def _element_matrix(self) -> np.ndarray:
        if self._elements is None:
            import pyarrow as pa
            import pyarrow.compute as pc
            from pymatgen.core.periodic_table import Element

            text = pa.array(self.frame["elements"].fillna("").astype(str).to_numpy(), type=pa.string())
            lists = pc.split_pattern(text, " ", max_splits=None)
            flat = pc.drop_null(lists.flatten()).dictionary_encode()  # a few dozen distinct symbols
            z_of = np.array([Element(sym).Z if sym else 0 for sym in flat.dictionary.to_pylist()], dtype=np.int64)
            rows = np.repeat(np.arange(len(self.frame)), pc.list_value_length(lists).to_numpy(zero_copy_only=False))
            m = np.zeros((len(self.frame), 119), dtype=bool)
            m[rows, z_of[flat.indices.to_numpy(zero_copy_only=False)]] = True
            m[:, 0] = False  # the empty string of a crystal without elements
            self._elements = m
        return self._elements

    def mask(self, query: str | None = None, *, formula: str | None = None, elements=None, only: bool = False,
             spacegroup: str | int | None = None, system: str | None = None, gap=None, fe=None,
             metal: bool | None = None, split: str | None = None) -> np.ndarray:  # fmt: skip
        """Boolean mask of the crystals that match every filter given (see :meth:`search`)."""
        f = self.frame
        keep = np.ones(len(f), dtype=bool)
        if query:
            kind, value = parse_query(query)
            if kind == "formula":
                formula = value
            else:
                elements = list(elements or []) + list(value)
        if formula:
            keep &= (f["formula"] == reduced_formula(formula)).to_numpy()
        if elements:
            if isinstance(elements, str):
                elements = [t for t in re.split(r"[\s,;\-]+", elements) if t]
            from pymatgen.core.periodic_table import Element

            symbols = []
            for e in elements:
                s = _element_symbol(str(e))
                if s is None:
                    raise LibraryError(f"{str(e)[:20]!r} is not an element symbol")
                symbols.append(s)
            zs = sorted({Element(s).Z for s in symbols})
            m = self._element_matrix()
            keep &= m[:, zs].all(1)
            if only:
                keep &= (f["n_elements"].to_numpy() == len(zs))
        if spacegroup not in (None, ""):
            keep &= self._spacegroup_mask(spacegroup)
        if system:
            from sen.symmetry import CRYSTAL_SYSTEMS

            name = str(system).strip().lower()
            if name not in CRYSTAL_SYSTEMS:
                raise LibraryError(f"unknown crystal system {str(system)[:30]!r}; use one of {', '.join(CRYSTAL_SYSTEMS)}")
            keep &= (f["crystal_system"] == name).to_numpy()
        for column, rng, what in (("band_gap", gap, "band-gap range"), ("formation_energy_per_atom", fe,
                                                                          "formation-energy range")):  # fmt: skip
            bounds = parse_range(rng, what)
            if bounds is not None:
                v = f[column].to_numpy()
                keep &= (v >= bounds[0]) & (v <= bounds[1])
        if metal is not None:
            gaps = f["band_gap"].to_numpy()
            keep &= (gaps == 0.0) if metal else (gaps > 0.0)
        if split:
            if split not in SPLITS:
                raise LibraryError(f"unknown split {str(split)[:20]!r}; use one of {', '.join(SPLITS)}")
            keep &= (f["split"] == split).to_numpy()
        return keep

    def _spacegroup_mask(self, spacegroup: str | int) -> np.ndarray:
        f = self.frame
        text = str(spacegroup).strip()
        if text.isdigit():
            number = int(text)
            if not 1 <= number <= 230:
                raise LibraryError(f"space group number {number} is not between 1 and 230")
            return (f["space_group_number"] == number).to_numpy()
        symbol = text.replace(" ", "")
        hit = (f["space_group_symbol"] == symbol).to_numpy()
        if not hit.any():
            lower = f["space_group_symbol"].str.lower() == symbol.lower()
            if lower.any():
                return lower.to_numpy()
            raise LibraryError(f"no crystal in the library has space group {text[:20]!r} "
                               "(give a symbol as spglib writes it, e.g. Fm-3m or P6_3/mmc, or a number 1-230)")  # fmt: skip
        return hit

    def search(self, query: str | None = None, *, limit: int | None = None, **filters):
        """The crystals matching every filter, in library order: a pandas DataFrame.

        Args:
            query: what a search box holds: a formula (``"LiFePO4"``, matched by reduced formula) or elements
                (``"Li Fe P O"``: crystals containing all of them); see :func:`parse_query`.
            formula: a formula (reduced before matching).
            elements: element symbols the crystal must contain; with ``only=True`` nothing else.
            spacegroup: a number (1-230) or a symbol as spglib writes it (``"Fm-3m"``).
            system: crystal system (``"cubic"``, ...).
            gap, fe: ranges of the DFT band gap (eV) and formation energy (eV/atom), ``"A:B"`` or (lo, hi).
            metal: True for DFT band gap 0, False for a positive gap.
            split: ``train``, ``validation``, ``test`` or ``none``.
            limit: at most this many rows.

        Raises:
            LibraryError: a malformed filter (one line, in the user's terms).
        """
        rows = self.frame[self.mask(query, **filters)]
        return rows.head(limit) if limit is not None else rows

    def get(self, material_id: str) -> dict:
        """Every stored value of one crystal (a dict); raises :class:`LibraryError` for an unknown id."""
        return self.frame.iloc[self._index(material_id)].to_dict()

    def _index(self, material_id: str) -> int:
        key = str(material_id).strip()
        if key not in self._row:
            raise LibraryError(f"no crystal {key[:40]!r} in the library (ids look like mp-19017)")
        return self._row[key]

    def structure(self, material_id: str):
        """The crystal's pymatgen Structure, as the model read it (fractional coordinates exact to 5e-8)."""
        from pymatgen.core import Lattice, Structure

        i = self._index(material_id)
        s = self._structure_arrays()
        a, b = s["species_offsets"][i], s["species_offsets"][i + 1]
        if b == a:
            raise LibraryError(f"{material_id} has no structure in the library: {self.frame['error'].iloc[i]}")
        frac = s["frac"][3 * a : 3 * b].reshape(-1, 3).astype(np.float64) / self.meta.get("frac_scale", FRAC_SCALE)
        return Structure(Lattice(s["lattice"][i].reshape(3, 3)), s["species"][a:b].tolist(), frac)

    def _structure_arrays(self) -> dict:
        if self._structures is None:
            import pyarrow.parquet as pq

            t = pq.read_table(self.path, columns=list(STRUCTURE_COLUMNS))
            species = t.column("species").combine_chunks()
            frac = t.column("frac").combine_chunks()
            self._structures = {
                "lattice": t.column("lattice").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, 9),
                "species": species.flatten().to_numpy(zero_copy_only=False),
                "species_offsets": _offsets(species),
                "frac": frac.flatten().to_numpy(zero_copy_only=False),
            }
        return self._structures

    # -------------------------------------------------------------- similarity

    def project(self, features: np.ndarray) -> np.ndarray:
        """Model features (F,) or (n, F), from :meth:`sen.predict.Predictor.embed`, into the library's embedding."""
        x = np.asarray(features, dtype=np.float64)
        one = x.ndim == 1
        x = np.atleast_2d(x)
        comps = self._pca["components"]
        if x.shape[1] != comps.shape[1]:
            raise LibraryError(f"features of width {x.shape[1]}, the library's model gives {comps.shape[1]}")
        out = (((x - self._pca["mean"]) / self._pca["scale"]) @ comps.T.astype(np.float64)).astype(np.float32)
        return out[0] if one else out

    def embedding(self, material_id: str) -> np.ndarray:
        """The stored embedding of a library crystal."""
        return self.embeddings[self._index(material_id)]

    def nearest(self, query, k: int = 5, predictor=None, exclude: str | None = None) -> Neighbours:
        """The ``k`` library crystals nearest to ``query`` in the model's embedding (Euclidean), nearest first.

        ``query``: a library id, a pymatgen Structure (embedded with ``predictor``, by default the library's
        model loaded on first use; it must be the model the library was built with), model features
        (:meth:`~sen.predict.Predictor.embed`, width F) or an embedding (width of :attr:`embeddings`).
        ``exclude``: an id to leave out (the query crystal itself). A library crystal is its own nearest
        crystal at distance 0.
        """
        vec = self._query_vector(query, predictor)
        d2 = ((self.embeddings - vec[None, :]) ** 2).sum(1)
        d2[~self._usable] = np.inf
        if exclude is not None and exclude in self._row:
            d2[self._row[exclude]] = np.inf
        k = max(0, min(int(k), int(np.isfinite(d2).sum())))
        idx = np.argpartition(d2, k - 1)[:k] if 0 < k < len(d2) else np.arange(len(d2))[:k]
        idx = idx[np.argsort(d2[idx], kind="stable")]
        f = self.frame.iloc[idx]
        import pandas as pd

        rows = pd.DataFrame({
            "distance": np.sqrt(d2[idx]),
            "material_id": f["material_id"].to_numpy(),
            "formula": f["formula"].to_numpy(),
            "space_group": [f"{s} ({n})" for s, n in zip(f["space_group_symbol"], f["space_group_number"], strict=True)],
            "band_gap": f["band_gap"].to_numpy(),
            "formation_energy_per_atom": f["formation_energy_per_atom"].to_numpy(),
            "error_band_gap": (f["pred_band_gap"] - f["band_gap"]).to_numpy(),
            "error_formation_energy_per_atom": (f["pred_formation_energy_per_atom"]
                                                - f["formation_energy_per_atom"]).to_numpy(),  # fmt: skip
            "split": f["split"].to_numpy(),
        })  # fmt: skip
        threshold, warning = self.threshold, None
        if threshold is not None and len(rows) and rows["distance"].iloc[0] > threshold:
            q = self.domain.get("quantile", 0.9)
            if isinstance(query, str):  # a library crystal: its DFT value is known, say only how isolated it is
                warning = (f"few similar crystals: the nearest other library crystal is {rows['distance'].iloc[0]:.1f} "
                           f"away, farther than {q:.0%} of test crystals are from their nearest training crystal "
                           f"({threshold:.1f})")  # fmt: skip
            else:
                warning = (f"unlike any known crystal: even the nearest library crystal is {rows['distance'].iloc[0]:.1f} "
                           f"away, farther than {q:.0%} of test crystals are from their nearest training crystal "
                           f"({threshold:.1f}); trust the prediction less")  # fmt: skip
        return Neighbours(rows.reset_index(drop=True), threshold, warning)

    def _query_vector(self, query, predictor) -> np.ndarray:
        from pymatgen.core import Structure

        if isinstance(query, str):
            return self.embeddings[self._index(query)].astype(np.float32)
        if isinstance(query, Structure):
            predictor = predictor or self._predictor()
            if getattr(predictor, "path", None) is None or file_sha256(predictor.path) != self.model_sha256:
                raise LibraryError(f"this predictor is not the model the library was built with "
                                   f"({self.model_name}, {self.model_sha256[:12]}); its embeddings are not comparable")  # fmt: skip
            return self.project(predictor.embed([query])[0])
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
        if vec.shape[0] == self.embeddings.shape[1]:
            return vec
        return self.project(vec)

    def _predictor(self):
        if getattr(self, "_loaded_predictor", None) is None:
            from sen.predict import Predictor

            self._loaded_predictor = Predictor.load(self.model_name)
        return self._loaded_predictor


def _offsets(list_array) -> np.ndarray:
    """Row offsets of a pyarrow ListArray, starting at 0 (its own offsets may start elsewhere after slicing)."""
    off = list_array.offsets.to_numpy()
    return off - off[0]


# ----------------------------------------------------------------------------- the ``sen library`` command

SEARCH_COLUMNS = (
    ("material_id", "id"), ("formula", "formula"), ("space_group", "space_group"), ("crystal_system", "system"),
    ("n_atoms", "atoms"), ("band_gap", "dft_gap_eV"), ("pred_band_gap", "sen_gap_eV"),
    ("formation_energy_per_atom", "dft_fe_eV_atom"), ("pred_formation_energy_per_atom", "sen_fe_eV_atom"),
    ("split", "split"),
)  # fmt: skip
NEAREST_COLUMNS = (
    ("distance", "distance"), ("material_id", "id"), ("formula", "formula"), ("space_group", "space_group"),
    ("band_gap", "dft_gap_eV"), ("error_band_gap", "sen_gap_error_eV"), ("formation_energy_per_atom", "dft_fe_eV_atom"),
    ("error_formation_energy_per_atom", "sen_fe_error_eV_atom"), ("split", "split"),
)  # fmt: skip


def add_library_parser(sub) -> None:
    """Add ``sen library search | show | nearest`` to the ``sen`` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--library", default=None, help="a library file (default: the shipped one)")
    lp = sub.add_parser("library", help="search the library of 33,064 known crystals, open one, find the nearest")
    lsub = lp.add_subparsers(dest="library_command", required=True)
    se = lsub.add_parser("search", parents=[common], help="crystals by formula, elements, symmetry, property ranges")
    se.add_argument("query", nargs="?", default=None, help='a formula (LiFePO4) or elements ("Li Fe P O")')
    se.add_argument("--only", action="store_true", help="only the given elements, no others")
    se.add_argument("--spacegroup", default=None, help="space group number (62) or symbol (Pnma)")
    se.add_argument("--system", default=None, help="crystal system: triclinic ... cubic")
    se.add_argument("--gap", default=None, metavar="A:B", help="DFT band gap range in eV, e.g. 1:3 or 2:")
    se.add_argument("--fe", default=None, metavar="A:B", help="DFT formation energy range in eV/atom, e.g. :-1")
    kind = se.add_mutually_exclusive_group()
    kind.add_argument("--metal", dest="metal", action="store_const", const=True, default=None, help="DFT gap 0")
    kind.add_argument("--insulator", dest="metal", action="store_const", const=False, help="DFT gap above 0")
    se.add_argument("--split", default=None, choices=SPLITS, help="only crystals of this part of the model's split")
    se.add_argument("--limit", type=int, default=20, help="at most this many rows (default 20; 0: all)")
    se.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sh = lsub.add_parser("show", parents=[common], help="one crystal: DFT values beside the prediction, structure")
    sh.add_argument("material_id", help="a Materials Project id, e.g. mp-19017")
    sh.add_argument("--format", choices=("text", "json"), default="text")
    ne = lsub.add_parser("nearest", parents=[common], help="the known crystals nearest to a structure file")
    ne.add_argument("target", help="a structure file (CIF, POSCAR, ...) or a library id")
    ne.add_argument("-k", type=int, default=5, help="how many (default 5)")
    ne.add_argument("--format", choices=("table", "csv", "json"), default="table")
    lp.set_defaults(run_library=run_library)


def run_library(args) -> int:
    """Run a ``sen library`` subcommand; errors are :class:`LibraryError` / ``StructureError`` (one line)."""
    library = Library.load(args.library)
    if args.library_command == "search":
        return _cli_search(library, args)
    if args.library_command == "show":
        return _cli_show(library, args)
    return _cli_nearest(library, args)


def _cli_search(library: Library, args) -> int:
    if args.limit < 0:
        raise LibraryError("--limit must be 0 (all) or more")
    if args.query is None and not any(v is not None for v in (args.spacegroup, args.system, args.gap, args.fe,
                                                              args.metal, args.split)):  # fmt: skip
        raise LibraryError('give a formula or elements ("Li Fe P O"), or a filter such as --spacegroup 225')
    rows = library.search(args.query, only=args.only, spacegroup=args.spacegroup, system=args.system, gap=args.gap,
                          fe=args.fe, metal=args.metal, split=args.split)  # fmt: skip
    total = len(rows)
    if args.limit:
        rows = rows.head(args.limit)
    records = [_search_record(r) for r in rows.to_dict("records")]
    sys.stdout.write(format_table(records, [c for _, c in SEARCH_COLUMNS], args.format))
    if args.format == "table":
        more = f"; the first {len(records)} shown (--limit 0 for all)" if len(records) < total else ""
        print(f"{total:,} of {len(library):,} crystals match{more}", file=sys.stderr)
    return 0


def _search_record(r: dict) -> dict:
    r = dict(r, space_group=f"{r['space_group_symbol']} ({r['space_group_number']})")
    return {short: _clean(r.get(long)) for long, short in SEARCH_COLUMNS}


def _clean(v):
    """A value fit for a table or JSON: rounded floats, None for NaN, plain Python numbers."""
    if isinstance(v, float | np.floating):
        return None if not math.isfinite(float(v)) else round(float(v), 4)
    if isinstance(v, np.integer):
        return int(v)
    return v


def format_table(records: list[dict], columns: list[str], fmt: str) -> str:
    """Rows as an aligned text table, CSV or JSON (a list of objects)."""
    if fmt == "json":
        return json.dumps(records, indent=1) + "\n"
    import csv
    import io

    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)
        return buf.getvalue()
    text = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in records]
    widths = [max([len(c)] + [len(row[j]) for row in text]) for j, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in text]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def comparison(row: dict) -> list[dict]:
    """DFT beside the prediction for both targets: ``target``, ``unit``, ``dft``, ``predicted``, ``spread``, ``error``."""
    out = []
    for t in TARGETS:
        dft, pred, spread = row.get(t), row.get("pred_" + t), row.get(f"pred_{t}_std")
        err = None if pred is None or dft is None or not math.isfinite(pred) else float(pred) - float(dft)
        out.append({"target": t, "unit": UNITS[t], "dft": _clean(dft), "predicted": _clean(pred),
                    "spread": _clean(spread), "error": _clean(err)})  # fmt: skip
    return out


SPLIT_NOTES = {
    "train": "training crystal: the model was fitted to it, so this is not a test",
    "validation": "validation crystal: used to choose the model, not to fit it",
    "test": "test crystal: the model never saw it, a fair test",
    "none": "not in the model's split (the training loader rejected it)",
}


def _cli_show(library: Library, args) -> int:
    row = library.get(args.material_id)
    mid = row["material_id"]
    near = library.nearest(mid, k=5, exclude=mid) if library._usable[library._index(mid)] else None
    structure = None
    if row.get("n_atoms") and not (isinstance(row.get("n_atoms"), float) and math.isnan(row["n_atoms"])):
        structure = library.structure(mid)
    if args.format == "json":
        doc = {k: _clean(v) for k, v in row.items()}
        doc["comparison"] = comparison(row)
        if structure is not None:
            doc["structure"] = {"lattice": structure.lattice.matrix.tolist(),
                                "species": [site.specie.symbol for site in structure],
                                "frac_coords": structure.frac_coords.tolist()}  # fmt: skip
        doc["nearest"] = [] if near is None else [{k: _clean(v) for k, v in r.items()} for r in near.rows.to_dict("records")]
        print(json.dumps(doc, indent=1))
        return 0
    print(f"{mid}  {row['formula']}  {row['space_group_symbol']} ({row['space_group_number']}), "
          f"{row['crystal_system']}, {row['n_atoms']} atoms")  # fmt: skip
    print(f"split: {row['split']} ({SPLIT_NOTES.get(row['split'], '')})")
    if isinstance(row.get("error"), str) and row["error"]:
        print(f"the model could not read it: {row['error']}")
    cmp = [{"property": f"{c['target']} ({c['unit']})", "dft": c["dft"], "sen": c["predicted"],
            "spread": c["spread"], "error": c["error"]} for c in comparison(row)]  # fmt: skip
    sys.stdout.write(format_table(cmp, ["property", "dft", "sen", "spread", "error"], "table"))
    if structure is not None:
        lat = structure.lattice
        print(f"lattice: a {lat.a:.4f} b {lat.b:.4f} c {lat.c:.4f} Å, alpha {lat.alpha:.3f} beta {lat.beta:.3f} "
              f"gamma {lat.gamma:.3f}°")  # fmt: skip
    if near is not None:
        print("nearest known crystals (model embedding):")
        sys.stdout.write(format_table([_near_record(r) for r in near.rows.to_dict("records")],
                                      [c for _, c in NEAREST_COLUMNS], "table"))  # fmt: skip
    print("data: Materials Project (CC BY 4.0), cite A. Jain et al., APL Materials 1, 011002 (2013)")
    return 0


def _near_record(r: dict) -> dict:
    return {short: _clean(r.get(long)) for long, short in NEAREST_COLUMNS}


def _cli_nearest(library: Library, args) -> int:
    if args.k < 1:
        raise LibraryError("-k must be 1 or more")
    if not Path(args.target).exists() and args.target in library:
        near = library.nearest(args.target, k=args.k)
    else:
        from sen.io import read_structure

        near = library.nearest(read_structure(args.target), k=args.k)
    records = [_near_record(r) for r in near.rows.to_dict("records")]
    sys.stdout.write(format_table(records, [c for _, c in NEAREST_COLUMNS], args.format))
    if near.warning:
        print(f"warning: {near.warning}", file=sys.stderr)
    return 0
