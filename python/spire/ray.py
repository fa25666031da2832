"""Restoring whole datasets on many processes and machines with Ray Data.

``pip install "spire-restore[ray]"``. Two entry points:

- :class:`RestoreBatch`, a callable class for ``ray.data.Dataset.map_batches``. Each actor
  loads the restorer once (a :class:`spire.Restorer` pickles as a reference to its model, not
  its weights), then restores every row of the batches it gets.
- :func:`restore_dataset`, which restores a folder (or a list of files, or a dataset of encoded
  images) into an output folder. It keeps relative paths, skips finished outputs (resume), and
  reports failed images instead of stopping.

On one machine ``ray.init()`` starts a local cluster. On many, connect to a running cluster
(``ray.init(address="auto")`` on a node, or ``ray.init("ray://head:10001")``). Nothing else
changes: every node needs spire installed and the model and image files at the same paths
(shared storage). Each actor asks for ``num_cpus`` CPUs (default 1) or ``num_gpus=1`` with
the ``cuda`` build and ``device="cuda"`` (docs/batch.md).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import Restorer, _spire, decode_image, encode_image, read_image, write_image

_Path = Union[str, "os.PathLike[str]"]

FAILURES_FILE = "failures.tsv"


def plan_folder(
    folder: _Path, out: _Path, format: str = "same", prompts: Optional[_Path] = None
) -> Tuple[List[Tuple[str, str, str, Optional[str], Optional[str]]], List[str]]:
    """The jobs of a folder run exactly as ``spire restore-dir`` plans them (the same code, in
    ``spire-core``): every PNG/JPEG under ``folder`` (hidden files and ``out`` left out) as
    ``(relative name, input path, output path, restoration prompt, semantic prompt)``, and the
    names in ``prompts`` that match no image."""
    jobs, unmatched = _spire.plan_folder(folder, out, format, prompts)
    return [(n, str(i), str(o), r, c) for n, i, o, r, c in jobs], list(unmatched)


def read_prompts(path: _Path) -> Dict[str, Tuple[Optional[str], Optional[str]]]:
    """``file<TAB>restoration prompt<TAB>semantic prompt`` (``.tsv``) or the same as CSV, read
    as ``spire restore-dir --prompts`` reads it: ``{relative path: (restoration, semantic)}``,
    empty cells as ``None``. Errors name the file and line."""
    return dict(_spire.read_prompt_table(path))


class RestoreBatch:
    """Restores the rows of a Ray Data batch; use with ``Dataset.map_batches``::

        ds.map_batches(RestoreBatch, fn_constructor_kwargs={"restorer": r, "options": {...}},
                       compute=ray.data.ActorPoolStrategy(size=2), batch_size=4)

    A row holds ``image`` (an ``H×W×C`` array), ``bytes`` (an encoded PNG/JPEG, with ``path``
    naming it, as ``ray.data.read_binary_files(..., include_paths=True)`` gives), or only
    ``path`` (the actor reads the file: on a cluster, from storage every node sees). Optional
    ``restoration_prompt`` and ``semantic_prompt`` columns override the options per row
    (``None`` or ``""``: the options'). Each row is restored alone with the options' seed, so
    its result equals ``restorer.restore(image, **options)`` bit for bit, wherever it runs.

    What comes back, per row, with an ``error`` column (``""`` when the row succeeded, else the
    exception's type and message; a bad row never fails the batch):

    - by default, a ``restored`` column with the arrays;
    - with ``encode="png"`` (or ``"jpg"``), an ``encoded`` column with the file bytes instead
      (what ``restore_dataset(..., format="parquet")`` stores);
    - with ``out``, each result written to a file and only ``name``, ``output``, ``error`` and
      ``seconds``: the ``output`` column's path when the row has one, else ``out`` / the path
      relative to ``root``. Files are written atomically (temporary name, then rename), so an
      output that exists is complete. No pixels travel back to the driver.
    """

    def __init__(
        self,
        restorer: Restorer,
        options: Optional[Mapping[str, Any]] = None,
        out: Optional[_Path] = None,
        root: Optional[_Path] = None,
        prompts: Optional[Mapping[str, Tuple[Optional[str], Optional[str]]]] = None,
        encode: Optional[str] = None,
    ):
        _limit_threads_to_actor()
        self.restorer = restorer
        self.options = dict(options or {})
        self.out = Path(out) if out is not None else None
        self.root = Path(root) if root is not None else None
        self.prompts = dict(prompts or {})
        self.encode = encode

    def _name(self, batch: Dict[str, np.ndarray], i: int) -> str:
        if "name" in batch:
            return str(batch["name"][i])
        if "path" not in batch:
            return f"row {i}"
        path = str(batch["path"][i])
        if self.root is None:
            return Path(path).name
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def _restore_row(self, batch: Dict[str, np.ndarray], i: int, name: str) -> np.ndarray:
        if "image" in batch:
            image = np.asarray(batch["image"][i])
        elif "bytes" in batch:
            image = decode_image(bytes(batch["bytes"][i]), str(batch["path"][i]) if "path" in batch else name)
        else:
            image = read_image(str(batch["path"][i]))
        opts = dict(self.options)
        if name in self.prompts:
            r, s = self.prompts[name]
            if r is not None:
                opts["restoration_prompt"] = r
            if s is not None:
                opts["semantic_prompt"] = s
        for col in ("restoration_prompt", "semantic_prompt"):
            if col in batch:
                v = batch[col][i]
                if v is not None and str(v) != "":
                    opts[col] = str(v)
        return self.restorer.restore(image, **opts)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        n = len(next(iter(batch.values())))
        names, results, errors, seconds = [], [], [], []
        for i in range(n):
            t = time.perf_counter()
            name = self._name(batch, i)
            names.append(name)
            try:
                result: Any = self._restore_row(batch, i, name)
                if self.out is not None:
                    target = Path(str(batch["output"][i])) if "output" in batch else self.out / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_image(target, result)
                    result = str(target)
                elif self.encode is not None:
                    result = encode_image(result, self.encode)
                errors.append("")
            except Exception as e:  # noqa: BLE001 — reported per row, not fatal
                result = None
                errors.append(f"{type(e).__name__}: {e}")
            results.append(result)
            seconds.append(time.perf_counter() - t)
        err = np.array(errors, dtype=object)
        took = np.array(seconds, dtype=np.float64)
        if self.out is not None:
            return {"name": np.array(names, dtype=object), "output": np.array(results, dtype=object), "error": err, "seconds": took}
        column = np.empty(n, dtype=object)
        for i, r in enumerate(results):
            column[i] = r if r is not None else (b"" if self.encode is not None else None)
        kept = {k: v for k, v in batch.items() if k not in ("bytes", "image")}
        kept["name"] = np.array(names, dtype=object)
        kept["encoded" if self.encode is not None else "restored"] = column
        kept["error"] = err
        kept["seconds"] = took
        return kept


def restore_dataset(
    source: Union[_Path, Iterable[_Path], Any],
    *,
    restorer: Restorer,
    out: _Path,
    format: str = "same",
    root: Optional[_Path] = None,
    prompts: Optional[Union[_Path, Mapping[str, Tuple[Optional[str], Optional[str]]]]] = None,
    concurrency: int = 1,
    batch_size: int = 1,
    num_cpus: Optional[float] = None,
    num_gpus: Optional[float] = None,
    **options: Any,
) -> Dict[str, Any]:
    """Restores a folder of images (or a list of files, or a Ray dataset with ``bytes`` or
    ``image`` and ``path`` columns) into ``out`` on ``concurrency`` Ray actors, each holding
    one loaded ``restorer``; ``options`` are :meth:`spire.Restorer.restore`'s keyword arguments.

    ``format``: ``"same"`` (PNG stays PNG, JPEG stays JPEG), ``"png"``, ``"jpg"`` — one file per
    image at its path relative to the folder (``root`` for lists and datasets), as
    ``spire restore-dir`` names them — or ``"parquet"``: Parquet files in ``out`` with one row
    per image (``name``, ``encoded`` PNG bytes, ``error``, ``seconds``).

    Resumes: images whose output exists are skipped (files are written under a temporary name
    and renamed, so one that exists is complete; for Parquet, names with a row without error).
    ``prompts`` (a ``prompts.tsv``/``.csv`` path or a ``{name: (restoration, semantic)}``
    mapping) gives per-image prompts. ``num_cpus`` / ``num_gpus`` are what each actor asks Ray
    for (default: one CPU; each actor then restores with that many threads).

    Returns ``{"restored": n, "skipped": n, "failed": [(name, message)], "unmatched_prompts":
    [names], "seconds": s, "images_per_sec": r}``. Failed images are also listed in
    ``out/failures.tsv`` (``out/_failures.tsv`` beside Parquet files, which Parquet readers
    skip); a bad image never stops the run.
    """
    import ray

    out = Path(out)
    parquet = format.lower() == "parquet"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = prompts if isinstance(prompts, Mapping) else None
    unmatched: List[str] = []
    done = _parquet_done(out) if parquet else set()
    skipped = 0
    ds = None
    if isinstance(source, (str, os.PathLike)):
        # The core plans a folder run: the same files, names and prompts as `spire restore-dir`.
        table_path = prompts if isinstance(prompts, (str, os.PathLike)) else None
        jobs, unmatched = plan_folder(source, out, "png" if parquet else format, table_path)
        rows = []
        for name, src, dst, r, c in jobs:
            if table is not None and name in table:
                r, c = table[name]
            if (name in done) if parquet else Path(dst).is_file():
                skipped += 1
            else:
                rows.append({"path": src, "name": name, "output": dst, "restoration_prompt": r or "", "semantic_prompt": c or ""})
        table = None
    elif hasattr(source, "map_batches"):
        ds = source
        if isinstance(prompts, (str, os.PathLike)):
            table = read_prompts(prompts)
    else:
        if isinstance(prompts, (str, os.PathLike)):
            table = read_prompts(prompts)
        paths = [Path(p) for p in source]
        base = Path(root) if root is not None else Path(os.path.commonpath([str(p.resolve().parent) for p in paths])) if paths else Path(".")
        rows = []
        for p in paths:
            name = p.resolve().relative_to(base.resolve()).as_posix()
            dst = out / name
            if format.lower() in ("png", "jpg", "jpeg"):
                dst = dst.with_suffix(".png" if format.lower() == "png" else ".jpg")
            if (name in done) if parquet else dst.is_file():
                skipped += 1
            else:
                rows.append({"path": str(p), "name": name, "output": str(dst)})
    if ds is None:
        if not rows:
            return _summary(out, [], skipped, unmatched, time.perf_counter() - t0, parquet)
        # Paths only: each actor reads its own files, so no read tasks compete with the actors
        # for CPUs and no encoded bytes pass through the object store.
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 4 * max(concurrency, 1)))
    resources: Dict[str, Any] = {}
    if num_cpus is not None:
        resources["num_cpus"] = num_cpus
    if num_gpus is not None:
        resources["num_gpus"] = num_gpus
    kwargs: Dict[str, Any] = {"restorer": restorer, "options": options, "root": root, "prompts": table}
    if parquet:
        kwargs["encode"] = "png"
    else:
        kwargs["out"] = out
    restored = ds.map_batches(
        RestoreBatch,
        fn_constructor_kwargs=kwargs,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        batch_size=batch_size,
        batch_format="numpy",
        **resources,
    )
    if parquet:
        before = set(out.glob("*.parquet"))
        restored.select_columns(["name", "encoded", "error", "seconds"]).write_parquet(str(out))
        results = _parquet_rows(sorted(set(out.glob("*.parquet")) - before))
    else:
        results = restored.select_columns(["name", "error"]).take_all()
    return _summary(out, results, skipped, unmatched, time.perf_counter() - t0, parquet)


def _parquet_rows(files: List[Path]) -> List[Dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: List[Dict[str, Any]] = []
    for f in files:
        t = pq.read_table(f, columns=["name", "error"])
        rows += [{"name": n, "error": e} for n, e in zip(t.column("name").to_pylist(), t.column("error").to_pylist())]
    return rows


def _parquet_done(out: Path) -> set:
    """Names with a row without error in ``out``'s Parquet files (a resumed run skips them)."""
    return {r["name"] for r in _parquet_rows(sorted(out.glob("*.parquet"))) if not r["error"]}


def _limit_threads_to_actor() -> None:
    """An actor restores with as many threads as CPUs Ray gave it (not every core of the node,
    which would oversubscribe a node running several actors). ``RAYON_NUM_THREADS`` set by the
    user wins. Must run before the process's first restore: the thread pool starts then."""
    if os.environ.get("RAYON_NUM_THREADS"):
        return
    cpus = None
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 — outside an actor: leave the default
        cpus = None
    if cpus is None and os.environ.get("OMP_NUM_THREADS"):
        try:
            cpus = float(os.environ["OMP_NUM_THREADS"])
        except ValueError:
            cpus = None
    if cpus is not None and cpus >= 1:
        os.environ["RAYON_NUM_THREADS"] = str(int(cpus))


def _summary(
    out: Path, rows: List[Dict[str, Any]], skipped: int, unmatched: List[str], seconds: float, parquet: bool
) -> Dict[str, Any]:
    failed = sorted((str(r["name"]), str(r["error"])) for r in rows if r["error"])
    if parquet:
        # A name that failed before and succeeded now (or the reverse in one run) counts once.
        ok = _parquet_done(out)
        failed = [(n, m) for n, m in failed if n not in ok]
    restored = sum(1 for r in rows if not r["error"])
    # Beside Parquet files the listing starts with `_`, which Parquet readers (pyarrow, Spark,
    # Ray) skip, so `pq.read_table(out)` still reads the folder.
    listing = out / (f"_{FAILURES_FILE}" if parquet else FAILURES_FILE)
    if failed:
        tmp = out / f".{FAILURES_FILE}.{os.getpid()}.spire-tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("file\terror\n")
            for p, m in failed:
                f.write(f"{p}\t{' '.join(m.split())}\n")
        os.replace(tmp, listing)
    elif listing.exists():
        listing.unlink()
    return {
        "restored": restored,
        "skipped": skipped,
        "failed": failed,
        "unmatched_prompts": unmatched,
        "seconds": seconds,
        "images_per_sec": restored / seconds if seconds > 0 else 0.0,
    }
