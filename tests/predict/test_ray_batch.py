"""``instaseg predict --engine ray``: Ray Data actor pools give the single-process predictor's detections,
report bad images in the results, survive a dying actor; bad addresses and Parquet inputs fail clearly.

One local Ray cluster (3 CPUs, started in-process) is shared by the tests of this module that need it:
starting Ray costs a few seconds, and it is shut down at the end to free the CPUs.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instaseg.cli import main
from instaseg.errors import ConfigError, DataError
from instaseg.predict import ray_batch
from instaseg.predict.predictor import Predictor
from instaseg.predict.ray_batch import RayOptions, collect_inputs, read_results, run_ray_predict
from tests.serve.fakes import CLASS_NAMES, BlobModel, blob_image


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    started = ray_batch.connect(None, num_cpus=3, timeout=5.0)
    yield
    if started:
        ray.shutdown()


def _coco_images(shared_data: Path, folder: Path, n: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted((shared_data / "coco_tiny" / "val2017").glob("*.jpg"))[:n]:
        shutil.copy(src, folder / src.name)
        out.append(folder / src.name)
    return out


def test_two_actors_give_the_single_process_detections_and_report_a_bad_image(
    ray_cluster, shared_data, tmp_path, capsys
) -> None:
    from tests.predict.test_predictor import _save_slim

    ckpt = tmp_path / "slim.pt"
    _save_slim(ckpt)
    images = _coco_images(shared_data, tmp_path / "imgs")
    bad = tmp_path / "imgs" / "000000000001.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    out = tmp_path / "results.parquet"
    argv = ["predict", str(tmp_path / "imgs"), "--engine", "ray", "--workers", "2", "--batch-size", "2",
            "--checkpoint", str(ckpt), "--score-thresh", "0.0", "--max-detections", "20",
            "--output", str(out), "--overlays", str(tmp_path / "overlays")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "5 images (1 failed)" in captured.out and "000000000001.jpg" in captured.err
    rows = read_results(out)
    assert [r["path"] for r in rows] == [str(p) for p in sorted([*images, bad])]
    by_path = {r["path"]: r for r in rows}
    failed = by_path[str(bad)]
    assert "000000000001.jpg" in failed["error"] and failed["scores"] is None
    single = Predictor.load(checkpoint=ckpt, score_thresh=0.0, max_detections=20)
    for path in images:
        row, inst = by_path[str(path)], single.predict(path)
        assert row["error"] is None and row["image_id"] == int(path.stem)
        assert len(inst) == 20 and (row["height"], row["width"]) == inst.image_size
        np.testing.assert_allclose(np.array(row["boxes"]), inst.boxes.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(row["scores"], inst.scores.numpy(), rtol=0, atol=1e-6)
        assert row["labels"] == inst.labels.tolist()
        assert row["category_ids"] == [single.category_id(lab) for lab in inst.labels.tolist()]
        assert row["rles"] == [r["counts"] for r in inst.to_rles()]
        assert (tmp_path / "overlays" / f"{int(path.stem)}_{path.stem}.jpg").is_file()
    assert main(argv) == 2  # never overwrites silently
    assert "already exists" in capsys.readouterr().err


def dies_once_predictor(marker: str) -> Predictor:
    """A predictor whose model kills its own actor process the first time it runs (``marker`` file
    records that it happened), as a node failure or an OOM kill would."""

    class Dying(BlobModel):
        def forward_lowres(self, images):
            if not os.path.exists(marker):
                Path(marker).write_text(str(os.getpid()))
                os._exit(1)
            return super().forward_lowres(images)

    return Predictor(Dying(), CLASS_NAMES, score_thresh=0.0)


def test_killing_an_actor_mid_job_still_completes_the_job(ray_cluster, tmp_path) -> None:
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(8):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(blob_image(), cv2.COLOR_RGB2BGR))
    marker = tmp_path / "died.txt"
    factory = functools.partial(dies_once_predictor, str(marker))
    summary = run_ray_predict(factory, str(folder), tmp_path / "r.jsonl",
                              RayOptions(workers=2, batch_size=2), log=lambda _: None)
    assert marker.is_file()  # an actor did die mid-job
    rows = read_results(tmp_path / "r.jsonl")
    assert summary.images == 8 and summary.errors == 0 and len(rows) == 8
    assert all(r["error"] is None and r["scores"] == pytest.approx([0.9, 0.7]) for r in rows)


def test_an_unreachable_address_fails_fast_with_one_line(tmp_path, capsys) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "a.png").write_bytes(b"")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"cannot reach a Ray cluster at 127.0.0.1:{port}"):
        ray_batch.connect(f"ray://127.0.0.1:{port}", num_cpus=1, timeout=2.0)
    # a black-holed address (TEST-NET-1, never routed) is given up after the timeout
    with pytest.raises(ConfigError, match="cannot reach a Ray cluster at 192.0.2.1:10001"):
        ray_batch.connect("ray://192.0.2.1", num_cpus=1, timeout=1.0)
    assert time.perf_counter() - start < 10
    argv = ["predict", str(tmp_path), "--engine", "ray", "--address", f"127.0.0.1:{port}",
            "--checkpoint", str(tmp_path / "none.pt"), "--output", str(tmp_path / "r.parquet")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach a Ray cluster" in err[0]


def test_parquet_inputs_need_their_path_column(tmp_path, capsys) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"uri": ["a.jpg", "b.jpg"], "image_id": [1, 2]}), good)
    inputs = collect_inputs(str(good), path_column="uri")
    assert inputs.parquet == good and len(inputs) == 2
    with pytest.raises(DataError, match=r"good\.parquet: no 'path' column of image paths \(columns: uri"):
        collect_inputs(str(good))
    argv = ["predict", str(good), "--engine", "ray", "--checkpoint", str(tmp_path / "x.pt"),
            "--output", str(tmp_path / "r.parquet")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "good.parquet: no 'path' column" in err and "--path-column" in err


def test_inputs_from_lists_and_bad_outputs(tmp_path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("# images\n/data/000000000139.jpg\ns3://bucket/000000000285.jpg\n\n")
    inputs = collect_inputs(str(listing))
    assert inputs.items == [{"path": "/data/000000000139.jpg", "image_id": 139},
                            {"path": "s3://bucket/000000000285.jpg", "image_id": 285}]
    with pytest.raises(DataError, match="no paths"):
        collect_inputs(str(tmp_path / "empty.txt")) if (tmp_path / "empty.txt").write_text("") == 0 else None
    with pytest.raises(ConfigError, match=r"\.parquet or \.jsonl"):
        run_ray_predict(Predictor, [str(listing)], tmp_path / "results.csv")
