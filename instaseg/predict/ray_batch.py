"""Batch inference over many images on Ray Data (``instaseg predict SOURCE --engine ray``).

Ray Data reads the list of inputs (a folder, a glob, a ``.txt`` list of paths or URIs, or a Parquet
file with a column of paths), and ``map_batches`` runs :class:`PredictBatch` in a pool of actors: each
actor loads the model once and predicts with the one predictor path
(:class:`~instaseg.predict.predictor.Predictor`, tiled when asked). Rows stream back to the driver,
which writes them to one Parquet or JSONL file. An image that cannot be read or predicted gives a row
with its ``error`` and the job goes on; an actor that dies is restarted and its batch retried.

Result rows (:data:`RESULT_SCHEMA`): ``image_id`` (int or null), ``path``, ``height``, ``width``,
``boxes`` (K x [x1, y1, x2, y2] pixels), ``labels`` (model label ids), ``category_ids`` (dataset
ids), ``scores``, ``rles`` (K compressed COCO RLE counts strings of an ``height x width`` mask) and
``error`` (null when the image was predicted).

Ray starts in-process (``ray.init``, no dashboard) unless ``--address`` / ``RAY_ADDRESS`` names a
cluster; an unreachable address fails within ``connect_timeout`` seconds with one line.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from instaseg.data.io import read_image
from instaseg.errors import ConfigError, DataError
from instaseg.fileio import atomic_path
from instaseg.predict.files import draw_overlay, image_ids, is_video, list_sources
from instaseg.predict.predictor import Predictor

OUTPUT_FORMATS = (".parquet", ".jsonl")
LIST_SUFFIXES = (".txt", ".lst")
PredictorFactory = Callable[[], Predictor]


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("image_id", pa.int64()), ("path", pa.string()), ("height", pa.int32()), ("width", pa.int32()),
        ("boxes", pa.list_(pa.list_(pa.float32(), 4))), ("labels", pa.list_(pa.int64())),
        ("category_ids", pa.list_(pa.int64())), ("scores", pa.list_(pa.float32())),
        ("rles", pa.list_(pa.string())), ("error", pa.string()),
    ])


@dataclass
class RayOptions:
    """How the job runs. ``address``: ``None`` (``RAY_ADDRESS`` or a local in-process cluster),
    ``"auto"`` (a cluster running on this machine), ``"ray://host:10001"`` or ``"host:6379"``."""

    address: str | None = None
    workers: int = 2
    batch_size: int = 8
    threads: int = 1  # torch threads and Ray CPUs per actor
    gpus_per_worker: float = 0.0
    connect_timeout: float = 10.0
    path_column: str = "path"
    overlays: Path | None = None
    tile: dict[str, Any] | None = None  # Predictor.predict_tiled options, or None for whole images
    progress: bool = False


@dataclass
class RaySummary:
    images: int = 0
    errors: int = 0
    instances: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0  # ray.init + first actor ready is part of ``seconds``
    output: Path | None = None
    failed: list[str] = field(default_factory=list)
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (s since submit, rows so far)


# ---------------------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """What Ray Data reads: ``items`` (path + image id rows) or a ``parquet`` file with ``column``."""

    items: list[dict[str, Any]] | None = None
    parquet: Path | None = None
    column: str = "path"

    def __len__(self) -> int:
        if self.items is not None:
            return len(self.items)
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(str(self.parquet)).metadata.num_rows)


def collect_inputs(source: str | Path | Sequence[str], *, path_column: str = "path") -> Inputs:
    """SOURCE -> :class:`Inputs`: a list of paths/URIs, a ``.txt`` file listing them (one per line),
    a ``.parquet`` file with a ``path_column``, a folder, a glob or one image.

    Raises :class:`DataError` naming the file for a Parquet file without ``path_column``, an empty
    list, or a source that matches no image (videos are not supported by the Ray engine)."""
    if not isinstance(source, str | Path):
        paths = [str(s) for s in source]
    else:
        text = str(source)
        suffix = Path(text).suffix.lower()
        if suffix == ".parquet":
            return Inputs(parquet=_check_parquet(Path(text), path_column), column=path_column)
        if suffix in LIST_SUFFIXES and Path(text).is_file():
            lines = Path(text).read_text(encoding="utf-8").splitlines()
            paths = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
            if not paths:
                raise DataError(text, "the list has no paths (one image path or URI per line)")
        elif _is_uri(text):
            paths = [text]
        else:
            found = list_sources(text)
            videos = [p for p in found if is_video(p)]
            if videos:
                raise DataError(videos[0], "videos are not supported by --engine ray (use --engine local)")
            paths = [str(p) for p in found]
    if not paths:
        raise DataError(None, "no input images given")
    ids = image_ids([Path(urlparse(p).path if _is_uri(p) else p) for p in paths])
    return Inputs(items=[{"path": p, "image_id": i} for p, i in zip(paths, ids, strict=True)])


def _check_parquet(path: Path, column: str) -> Path:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(path, "no such Parquet file")
    try:
        names = pq.read_schema(str(path)).names
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
        raise DataError(path, f"not a readable Parquet file ({exc})") from None
    if column not in names:
        raise DataError(
            path, f"no {column!r} column of image paths (columns: {', '.join(names) or 'none'}); "
            "name it with --path-column"
        )
    return path


def _is_uri(text: str) -> bool:
    scheme = urlparse(text).scheme
    return len(scheme) > 1 and scheme != "file"  # "C:\\..." has a one-letter scheme


def read_image_uri(uri: str) -> np.ndarray:
    """Read a local path, ``file://`` URI, ``http(s)://`` URL or any filesystem pyarrow knows
    (``s3://``, ``gs://``, ``hdfs://``) as uint8 RGB, through :func:`instaseg.data.io.read_image`."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return read_image(parsed.path)
    if not _is_uri(uri):
        return read_image(uri)
    suffix = Path(parsed.path).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        try:
            if parsed.scheme in ("http", "https"):
                from urllib.request import urlopen

                with urlopen(uri, timeout=60) as resp:  # noqa: S310 (the user's own URL)
                    tmp.write(resp.read())
            else:
                from pyarrow import fs as pafs

                filesystem, inner = pafs.FileSystem.from_uri(uri)
                with filesystem.open_input_stream(inner) as stream:
                    tmp.write(stream.read())
        except Exception as exc:
            raise DataError(uri, f"cannot download: {exc}") from None
        tmp.flush()
        try:
            return read_image(tmp.name)
        except DataError as exc:
            raise DataError(uri, exc.problem) from None


# ---------------------------------------------------------------------------------------- actor
class PredictBatch:
    """The callable class of ``map_batches``: loads the model once per actor, then predicts batches
    of rows ``{path, image_id}`` and returns a ``pyarrow.Table`` of :func:`_schema` rows."""

    def __init__(self, factory: PredictorFactory, threads: int, column: str,
                 tile: dict[str, Any] | None, overlays: str | None) -> None:
        import torch

        torch.set_num_threads(max(int(threads), 1))
        self.predictor = factory()
        self.column, self.tile, self.overlays = column, tile, overlays

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        paths = [str(p) for p in batch[self.column]]
        ids = batch.get("image_id")
        rows = [self.predict_one(p, None if ids is None else ids[k]) for k, p in enumerate(paths)]
        return pa.Table.from_pylist(rows, schema=_schema())

    def predict_one(self, path: str, image_id: Any) -> dict[str, Any]:
        """One result row; any failure (unreadable image, model error) becomes the row's ``error``."""
        pred = self.predictor
        row: dict[str, Any] = {"image_id": None if image_id is None else int(image_id), "path": path}
        try:
            image = read_image_uri(path)
            inst = pred.predict_tiled(image, **self.tile) if self.tile else pred.predict(image)
            inst = inst.with_rles(pred.mask_thresh)
            h, w = inst.image_size
            labels = inst.labels.tolist()
            row.update(
                height=h, width=w, boxes=inst.boxes.tolist(), labels=labels,
                category_ids=[pred.category_id(lab) for lab in labels], scores=inst.scores.tolist(),
                rles=[r["counts"] for r in inst.rles] if inst.rles is not None else [],
            )
            if self.overlays:
                self._overlay(image, inst, path, image_id)
        except Exception as exc:  # reported in the results; the job goes on
            row["error"] = str(exc) if isinstance(exc, DataError) else f"{path}: {type(exc).__name__}: {exc}"
        return row

    def _overlay(self, image: np.ndarray, inst: Any, path: str, image_id: Any) -> None:
        import cv2

        stem = Path(urlparse(path).path).stem
        name = f"{stem}.jpg" if image_id is None else f"{int(image_id)}_{stem}.jpg"
        overlay = draw_overlay(image, inst, self.predictor.class_names_of(inst))
        cv2.imwrite(str(Path(self.overlays) / name), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))


# ---------------------------------------------------------------------------------------- cluster
def _host_port(address: str) -> tuple[str, int]:
    """``ray://host:port`` / ``host:port`` -> (host, port); Ray Client's default port is 10001, the
    GCS's 6379."""
    parsed = urlparse(address if "://" in address else f"gcs://{address}")
    default = 10001 if parsed.scheme == "ray" else 6379
    if not parsed.hostname:
        raise ConfigError(f"--address {address!r}: expected auto, ray://HOST:PORT or HOST:PORT")
    try:
        port = parsed.port or default
    except ValueError:
        raise ConfigError(f"--address {address!r}: the port is not a number") from None
    return parsed.hostname, port


def connect(address: str | None, *, num_cpus: int, timeout: float, env_path: bool = True) -> bool:
    """Make sure Ray is initialised; returns True when this call started it (then shut it down).

    ``address`` ``None`` uses ``RAY_ADDRESS`` or starts a local in-process cluster with ``num_cpus``.
    A remote address is probed with a TCP connect first, so an unreachable one fails within
    ``timeout`` seconds with a :class:`ConfigError` instead of hanging."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "local", "auto"):
        _probe(address, timeout)
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "logging_level": "WARNING"}
    if address in (None, "local"):
        # local workers must import instaseg (and the caller's modules) as the driver does
        env = {"PYTHONPATH": os.pathsep.join(_import_paths())} if env_path else {}
        ray.init(num_cpus=num_cpus, runtime_env={"env_vars": env} if env else None, **common)
        return True
    try:
        ray.init(address=address, **common)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--address {address}: cannot connect to Ray: {first}") from None
    return True


def _probe(address: str, timeout: float) -> None:
    """ConfigError unless a TCP connection to ``address`` opens within ``timeout`` seconds (Ray's own
    client would retry for minutes)."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else exc.strerror or exc
        raise ConfigError(
            f"--address {address}: cannot reach a Ray cluster at {host}:{port} ({reason}, "
            f"waited up to {timeout:g} s); check the address or RAY_ADDRESS"
        ) from None


def _import_paths() -> list[str]:
    """The driver's import roots: this package's parent folder, then ``sys.path`` folders."""
    roots = [str(Path(__file__).resolve().parents[2]), os.getcwd()]  # the folder holding instaseg/
    roots += [p for p in sys.path if p and Path(p).is_dir()]
    return list(dict.fromkeys(roots))


# ---------------------------------------------------------------------------------------- job
def run_ray_predict(
    factory: PredictorFactory,
    source: str | Path | Sequence[str],
    output: str | Path,
    options: RayOptions | None = None,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> RaySummary:
    """Predict every input of ``source`` on a Ray actor pool and write the rows to ``output``
    (``.parquet`` or ``.jsonl``, written atomically). ``factory()`` builds the predictor inside each
    actor (e.g. ``functools.partial(Predictor.load, checkpoint=...)``); it must be picklable."""
    opts = options or RayOptions()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(output)
    if out.suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(f"--output {out}: --engine ray writes a .parquet or .jsonl file")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists; choose another --output or pass --overwrite")
    if opts.workers < 1 or opts.batch_size < 1 or opts.threads < 1:
        raise ConfigError("--workers, --batch-size and --threads must be >= 1")
    inputs = collect_inputs(source, path_column=opts.path_column)
    out.parent.mkdir(parents=True, exist_ok=True)
    if opts.overlays is not None:
        Path(opts.overlays).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # + 1 CPU for Ray Data's own read tasks, which would wait forever behind the actors otherwise
    started = connect(opts.address, num_cpus=opts.workers * opts.threads + 1, timeout=opts.connect_timeout)
    try:
        summary = _execute(factory, inputs, out, opts, log)
    finally:
        if started:
            import ray

            ray.shutdown()
    summary.seconds = time.perf_counter() - start
    return summary


def _dataset(inputs: Inputs, opts: RayOptions) -> Any:
    """The input rows in enough blocks that every actor gets work: an actor pool parallelises over
    blocks, and a single block of all the paths would keep all but one actor idle."""
    import ray

    n = len(inputs)
    blocks = max(1, min(n, max(opts.workers * 4, -(-n // opts.batch_size))))
    if inputs.items is not None:
        return ray.data.from_items(inputs.items, override_num_blocks=blocks)
    return ray.data.read_parquet(str(inputs.parquet)).repartition(blocks)


def _execute(factory: PredictorFactory, inputs: Inputs, out: Path, opts: RayOptions,
             log: Callable[[str], None]) -> RaySummary:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come back in input order
    ctx.enable_progress_bars = opts.progress
    ctx.print_on_execution_start = False
    t0 = time.perf_counter()
    ds = _dataset(inputs, opts).map_batches(
        PredictBatch,
        fn_constructor_args=(factory, opts.threads, inputs.column, opts.tile,
                             None if opts.overlays is None else str(Path(opts.overlays).resolve())),
        batch_size=opts.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=opts.workers),
        num_cpus=opts.threads,
        num_gpus=opts.gpus_per_worker or None,
    )  # Ray Data's actor pools restart dead actors and retry their batches by default
    summary = RaySummary(output=out)
    with atomic_path(out) as tmp:
        writer = _Writer(tmp, out.suffix.lower())
        try:
            for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                if summary.images == 0:
                    summary.startup_seconds = time.perf_counter() - t0
                writer.write(table)
                errors = [e for e in table.column("error").to_pylist() if e]
                summary.images += table.num_rows
                summary.arrivals.append((time.perf_counter() - t0, summary.images))
                summary.errors += len(errors)
                summary.failed.extend(errors)
                summary.instances += sum(len(s or []) for s in table.column("scores").to_pylist())
                for e in errors:
                    log(f"instaseg: failed {e}")
        finally:
            writer.close()
    return summary


class _Writer:
    """Append pyarrow tables to one Parquet file or JSON Lines file."""

    def __init__(self, path: Path, suffix: str) -> None:
        self.path, self.suffix = path, suffix
        self.parquet: Any = None
        self.jsonl = open(path, "w", encoding="utf-8") if suffix == ".jsonl" else None  # noqa: SIM115

    def write(self, table: Any) -> None:
        table = table.select(_schema().names).cast(_schema())
        if self.jsonl is not None:
            for row in table.to_pylist():
                self.jsonl.write(json.dumps(row) + "\n")
            return
        import pyarrow.parquet as pq

        if self.parquet is None:
            self.parquet = pq.ParquetWriter(str(self.path), _schema())
        self.parquet.write_table(table)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        elif self.parquet is not None:
            self.parquet.close()
        else:  # no rows: still a valid, empty Parquet file
            import pyarrow.parquet as pq

            pq.write_table(_schema().empty_table(), str(self.path))


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a results file written by :func:`run_ray_predict` (Parquet or JSONL)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()
