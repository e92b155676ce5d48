"""data.image_size follows the model's stated input size; a mismatch is one ConfigError naming both keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from instaseg.cli import main
from instaseg.config import load_config
from instaseg.engine.launch import model_input_size, resolve_image_size
from instaseg.errors import ConfigError
from tests.engine.helpers import tiny_overrides
from tests.engine.tiny import ensure_registered

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def _data_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTASEG_DATA", "/data/root")  # configs only: nothing is read


def test_models_state_their_input_size() -> None:
    where, size = model_input_size("maskrcnn_r18_slim", {})  # type: ignore[misc]
    assert size == 128 and where == "model.kwargs.max_size (default of maskrcnn_r18_slim)"
    assert model_input_size("solov2_lite", {"input_size": 320}) == ("model.kwargs.input_size", 320)
    assert model_input_size("yolact_nano", {})[1] == 512  # type: ignore[index]
    assert model_input_size(ensure_registered(), {}) is None  # the test model states none


@pytest.mark.parametrize(
    ("name", "size"),
    [("default", 128), ("solov2_pennfudan", 320), ("yolact_pennfudan", 320), ("pennfudan", 512),
     ("coco_tiny", 512), ("simple_fpn", 128), ("solov2", 128), ("yolact", 128), ("yolact_nano", 128),
     ("mask_rcnn", 1333)],
)
def test_shipped_configs_derive_their_image_size(name: str, size: int) -> None:
    assert resolve_image_size(load_config(CONFIGS / f"{name}.yaml")) == size


def test_mismatch_is_one_line_naming_both_keys() -> None:
    cfg = load_config(CONFIGS / "solov2_pennfudan.yaml", ["data.image_size=512"])
    with pytest.raises(ConfigError) as info:
        resolve_image_size(cfg)
    msg = str(info.value)
    assert "'data.image_size' is 512" in msg and "model.kwargs.input_size is 320" in msg and "\n" not in msg
    assert resolve_image_size(load_config(CONFIGS / "solov2_pennfudan.yaml", ["data.image_size=320"])) == 320


def test_model_without_a_size_needs_data_image_size() -> None:
    cfg = load_config(None, [f"model.name={ensure_registered()}"])
    with pytest.raises(ConfigError, match="'data.image_size' is needed"):
        resolve_image_size(cfg)


def test_train_refuses_a_mismatch_and_writes_the_resolved_size(tmp_path: Path, capsys) -> None:
    args = ["train", "--output", str(tmp_path / "bad"), "--set", "data.image_size=96"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instaseg: error:") and "model.kwargs.max_size" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    run = tmp_path / "run"
    argv = ["train", "--output", str(run)]
    for o in tiny_overrides("train.epochs=1", "eval.num_overlays=0", "model.kwargs={input_size: 32}"):
        argv += ["--set", o]
    assert main(argv) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["image_size"] == 32
