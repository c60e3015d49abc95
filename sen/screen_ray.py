"""The Ray engine of ``sen screen``: Ray Data read -> featurise (tasks) -> predict (actor pool) -> write.

* **Read**: the input is cut into shards (a Parquet row group, 1,000 structure files or database
  rows, a whole JSON Lines or CSV file), each read by one task with the same readers as the local
  engine (:class:`sen.screen.Source`), so keys and ids are the same; records already written by an
  earlier run are left out there. Small blocks (``target_max_block_size`` 1 MB) keep a single big
  file streaming into the next stage instead of arriving as one block at its end.
* **Featurise**: ``map_batches`` tasks (one CPU each) parse, validate and build the crystal graphs
  (:func:`sen.screen.featurise`); a bad record becomes its error row here.
* **Predict**: an actor pool (``num_gpus=1`` per actor when the cluster has GPUs, else one CPU
  each) that loads the weights once per actor, sent through the object store, so a cluster's nodes
  need no copy of a custom model.
* **Write**: the driver takes the rows as they come (``iter_batches``) and commits them with the
  same :class:`sen.screen.PartWriter` as the local engine: output and resume behave the same.

Between stages a row travels as one pickled blob (no Arrow schema to infer from nulls). With no
address (``--address`` or ``RAY_ADDRESS``) a local Ray is started (``ray.init(num_cpus=...)``) and
shut down at the end; a Ray already initialised by the caller is used as it is and left running.
On a cluster, the input files must be readable from every node (a shared file system).
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Iterator

import numpy as np

from sen.screen import INSTALL_HINT, Runner, ScreenError, Source, _make_key, default_workers, featurise


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ScreenError(f"--engine ray needs Ray: {INSTALL_HINT}") from None
    return ray


def _read_shard(item: dict) -> list[dict]:
    """Ray Data ``flat_map``: the records of one shard that are not written yet."""
    source, start, stop, skip = pickle.loads(item["spec"])
    skip = set(skip.tolist())
    return [{"_key": rec.key, "record": pickle.dumps(rec)} for rec in source.records(start, stop) if rec.key not in skip]


def _featurise_batch(batch, graph_config, max_atoms):
    """Ray Data ``map_batches`` task: records -> (row, crystal graph or None), pickled."""
    import pandas as pd

    out = [pickle.dumps(featurise(pickle.loads(b), graph_config, max_atoms)) for b in batch["record"]]
    return pd.DataFrame({"_key": batch["_key"].to_numpy(), "featurised": out})


class _PredictActor:
    """Ray Data actor: loads the weights once, predicts batches of featurised rows."""

    def __init__(self, weights_ref, device: str | None, batch_size: int, name: str, version: str):
        import ray
        import torch

        from sen.predict import Predictor

        torch.set_num_threads(1)
        weights = ray.get(weights_ref[0]) if isinstance(weights_ref, list) else weights_ref
        folder = tempfile.mkdtemp(prefix="sen-screen-")
        path = os.path.join(folder, "model.pt")
        with open(path, "wb") as fh:
            fh.write(weights)
        self.runner = Runner(Predictor.load(path, device=device), batch_size)
        self.runner.name, self.runner.version = name, version

    def __call__(self, batch):
        import pandas as pd

        rows, good, graphs = [], [], []
        for b in batch["featurised"]:
            row, graph = pickle.loads(b)
            row.update(model=self.runner.name, model_version=self.runner.version)
            rows.append(row)
            if graph is not None:
                good.append(row)
                graphs.append(graph)
        if graphs:
            self.runner.predict_into(good, graphs)
        return pd.DataFrame({"row": [pickle.dumps(r) for r in rows]})


def _shard_specs(sources: list[Source], done: np.ndarray, shard_rows: int) -> list[bytes]:
    specs = []
    for s in sources:
        for start, stop in s.shards(shard_rows):
            lo = _make_key(s.index, start)
            hi = _make_key(s.index, stop) if stop is not None else _make_key(s.index + 1, 0)
            skip = done[(done >= lo) & (done < hi)] if len(done) else np.zeros(0, dtype=np.int64)
            if stop is not None and len(skip) >= stop - start:
                continue  # every record of this shard is written already
            specs.append(pickle.dumps((s, start, stop, skip)))
    return specs


def iter_ray(
    sources: list[Source],
    done: np.ndarray,
    predictor,
    version: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    device: str | None = None,
    batch_size: int = 64,
    chunk_size: int = 32,
    shard_rows: int = 1000,
) -> Iterator[list[dict]]:
    """Result rows (lists of dicts with ``_key``) for every record of ``sources`` not in ``done``.

    ``num_cpus``: CPUs of a local Ray (default: all cores); ``actors``: predicting actors (default:
    one per GPU, else half the CPUs, at least one).
    """
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus or default_workers(), **kwargs)
        started = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.target_max_block_size = 1 << 20
        specs = _shard_specs(sources, done, shard_rows)
        if not specs:
            return
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        n_actors = actors or (gpus if gpus else max(1, int(resources.get("CPU", 1)) // 2))
        with open(predictor.path, "rb") as fh:
            weights_ref = [ray.put(fh.read())]  # in a list: passed as a reference, fetched by each actor
        ds = ray.data.from_items([{"spec": b} for b in specs], override_num_blocks=len(specs))
        ds = ds.flat_map(_read_shard, num_cpus=0.25)  # its own operator (other resources): not fused
        ds = ds.map_batches(_featurise_batch, batch_format="pandas", batch_size=chunk_size, num_cpus=1,
                            fn_kwargs={"graph_config": predictor.graph_config, "max_atoms": predictor.max_atoms})  # fmt: skip
        ds = ds.map_batches(
            _PredictActor,
            batch_format="pandas",
            batch_size=batch_size,
            concurrency=n_actors,
            num_gpus=1 if gpus else 0,
            num_cpus=1,
            fn_constructor_kwargs={"weights_ref": weights_ref, "device": device, "batch_size": batch_size,
                                   "name": predictor.name, "version": version},  # fmt: skip
        )
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None, prefetch_batches=1):
            yield [pickle.loads(b) for b in batch["row"]]
    finally:
        if started:
            ray.shutdown()
