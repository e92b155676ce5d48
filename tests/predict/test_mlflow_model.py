"""The MLflow pyfunc model every tracked run logs: loads back with mlflow.pyfunc, predicts exactly what
instaseg's Predictor predicts, is registered by name when asked, and carries what `mlflow models
serve` needs (MLmodel flavours, pinned requirements, the packaged source)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import instaseg
from instaseg.config import load_config
from instaseg.data.build import build_dataset
from instaseg.errors import DataError
from instaseg.predict.validation import train

TINY = [
    "model.kwargs={min_size: 64, max_size: 64}",
    "data.train=shapes:8:64",
    "data.val=shapes:10:64",
    "data.image_size=64",
    "data.augment={}",
    "train.max_iters=2",
    "train.batch_size=2",
    "train.warmup_iters=1",
    "train.num_threads=1",
    "eval.batch_size=2",
    "eval.num_overlays=0",
    "output.tensorboard=false",
    "output.progress=false",
    "output.mlflow=true",
    "output.mlflow_register_name=instaseg-shapes",
]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    tmp = tmp_path_factory.mktemp("mlflow")
    # the default store of a run: sqlite:///<parent of the run dir>/mlflow.db (+ mlartifacts/)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = train(load_config(None, TINY), output=tmp / "run")
    run_id = (result.run_dir / "mlflow_run_id.txt").read_text().strip()
    return result.run_dir, uri, run_id


def _image() -> np.ndarray:
    return build_dataset("shapes:10:64", split="val").load_record(0).image


def test_pyfunc_predicts_like_the_predictor(logged_run: tuple[Path, str, str]) -> None:
    import mlflow
    import pandas as pd

    run_dir, uri, run_id = logged_run
    mlflow.set_tracking_uri(uri)
    # A 2-iteration model scores below the default 0.5: compare at 0.05 (model_config at load time).
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model", model_config={"score_thresh": 0.05})
    image = np.ascontiguousarray(_image())
    predictor = instaseg.load(run_dir, score_thresh=0.05)  # best.pt, as the pyfunc model
    expected = predictor.predict(image)
    assert len(expected) > 0
    path = run_dir / "probe.png"
    Image.fromarray(image).save(path)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()

    out = model.predict(pd.DataFrame({"image": [str(path), b64]}))
    assert len(out) == 2
    for row in (out.iloc[0], out.iloc[1], model.predict(image).iloc[0]):
        assert row["labels"] == expected.labels.tolist()
        np.testing.assert_allclose(np.asarray(row["scores"]), expected.scores.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(row["boxes"]).reshape(-1, 4), expected.boxes.numpy(), rtol=1e-5, atol=1e-3
        )
        assert [r["counts"] for r in row["rles"]] == [r["counts"] for r in expected.to_rles()]
        assert row["class_names"] == predictor.class_names_of(expected)
    # an (N, H, W, 3) batch gives one row per image
    assert len(model.predict(np.stack([image, image]))) == 2
    with pytest.raises(DataError, match="input row 0"):
        model.predict(pd.DataFrame({"image": ["not/a/file.png"]}))

    # what `mlflow models serve` runs: its scoring app, JSON in and out
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    client = TestClient(scoring_server.init(model))
    reply = client.post("/invocations", json={"dataframe_split": {"columns": ["image"], "data": [[b64]]}})
    assert reply.status_code == 200, reply.text
    served = reply.json()["predictions"][0]
    assert served["labels"] == expected.labels.tolist()
    assert [r["counts"] for r in served["rles"]] == [r["counts"] for r in expected.to_rles()]


def test_model_is_registered_and_servable(logged_run: tuple[Path, str, str]) -> None:
    import mlflow
    from mlflow.artifacts import download_artifacts

    _, uri, run_id = logged_run
    client = mlflow.MlflowClient(uri)
    versions = client.search_model_versions("name='instaseg-shapes'")
    assert [v.run_id for v in versions] == [run_id]
    local = Path(download_artifacts(f"runs:/{run_id}/model", tracking_uri=uri))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "mlflow.pyfunc.model"
    code = local / pyfunc["code"] / "instaseg"
    assert (code / "predict" / "predictor.py").is_file() and not list(code.rglob("__pycache__"))
    reqs = (local / "requirements.txt").read_text().split()
    names = {r.split("==")[0] for r in reqs}
    assert {"torch", "torchvision", "numpy", "pandas", "pycocotools", "mlflow"} <= names
    assert all("==" in r and "+" not in r for r in reqs if not r.startswith("-"))
    conda = yaml.safe_load((local / "conda.yaml").read_text())
    assert any(isinstance(d, dict) and "pip" in d for d in conda["dependencies"])
    assert (local / "artifacts" / "best.pt").is_file()
