"""Typed config: YAML loading, dotted overrides, validation errors, env expansion, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from instaseg.config import (
    Config,
    config_to_dict,
    embedded_default,
    load_config,
    merge_overrides,
    save_config,
)
from instaseg.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_without_file() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.model.name == "maskrcnn_r18_slim"


def test_default_yaml_equals_builtin_defaults() -> None:
    # configs/default.yaml documents the packaged default; they must not drift apart.
    assert load_config(CONFIGS / "default.yaml") == embedded_default()
    # The budget belongs to the embedded default only: a YAML without it trains to its epochs.
    assert Config().train.max_time_min is None and embedded_default().train.max_time_min == 9.5
    assert Config().eval.tta is False and embedded_default().eval.tta is True  # flips: the default only
    assert Config().eval.refine_masks is False and embedded_default().eval.refine_masks is True
    assert embedded_default(["train.max_time_min=null"]).train.max_time_min is None


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTASEG_DATA", "/data/root")
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert "${" not in cfg.data.train and "${" not in cfg.data.val


def test_mask_rcnn_recipe() -> None:
    cfg = load_config(CONFIGS / "mask_rcnn.yaml")
    t, kw = cfg.train, cfg.model.kwargs
    assert cfg.model.name == "maskrcnn_r50_fpn"
    assert (t.lr, t.weight_decay, t.momentum, t.batch_size, t.epochs) == (0.0025, 1e-4, 0.9, 4, 50)
    assert (t.warmup_iters, t.warmup_factor, t.clip_grad_norm) == (1000, 0.001, 10.0)
    assert set(t.loss_weights) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert kw["box_batch_size_per_image"] == 512 and kw["rpn_batch_size_per_image"] == 256
    assert kw["box_positive_fraction"] == 0.25 and kw["rpn_positive_fraction"] == 0.5
    assert kw["bbox_reg_weights"] == [10.0, 10.0, 5.0, 5.0]


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.1\n  epochs: 3\n")
    cfg = load_config(
        f,
        [
            "train.lr=0.01",
            "train.amp=false",
            "data.scales=[96, 128]",
            "model.kwargs.min_size=300",
            "train.max_iters=null",
            "train.lr=2e-3",
        ],
    )
    assert cfg.train.lr == 0.002 and cfg.train.epochs == 3 and cfg.train.amp is False
    assert cfg.data.scales == [96, 128] and cfg.model.kwargs == {"min_size": 300}
    assert cfg.train.max_iters is None


def test_int_is_accepted_for_float() -> None:
    cfg = load_config(None, ["train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'train\.lrr'"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"'optim'"):
        load_config(None, ["optim.lr=0.1"])


@pytest.mark.parametrize("old", ["score_threshold", "box_score_thresh", "default_score_threshold"])
def test_old_score_threshold_names_point_to_score_thresh(tmp_path: Path, old: str) -> None:
    f = tmp_path / "old.yaml"
    f.write_text(f"eval:\n  {old}: 0.3\n")
    hint = rf"old\.yaml: unknown config key 'eval\.{old}': it is now eval\.score_thresh"
    with pytest.raises(ConfigError, match=hint) as info:
        load_config(f)
    assert "\n" not in str(info.value)
    assert load_config(None, ["eval.score_thresh=0.3"]).eval.score_thresh == 0.3
    with pytest.raises(ConfigError, match="'eval.score_thresh': must be in"):
        load_config(None, ["eval.score_thresh=1.5"])


def test_wrong_type_names_key_expected_and_got(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'train\.epochs'.*expected int.*'many'"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"'train\.amp'.*expected bool"):
        load_config(None, ["train.amp=3"])
    with pytest.raises(ConfigError, match=r"'data\.scales\[1\]'.*expected int"):
        load_config(None, ["data.scales=[1, x]"])
    with pytest.raises(ConfigError, match=r"'train'.*mapping"):
        load_config(None, ["train=3"])


def test_bad_values_and_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.optimizer"):
        load_config(None, ["train.optimizer=lion"])
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(None, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    f = tmp_path / "broken.yaml"
    f.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml.*YAML"):
        load_config(f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml.*mapping"):
        load_config(f)


def test_env_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTASEG_DATA", "/some/where")
    cfg = load_config(None, ["data.train=coco:${INSTASEG_DATA}/a.json", "data.val=folder:$INSTASEG_DATA/b"])
    assert cfg.data.train == "coco:/some/where/a.json" and cfg.data.val == "folder:/some/where/b"
    monkeypatch.delenv("INSTASEG_DATA")
    with pytest.raises(ConfigError, match="INSTASEG_DATA is not set"):
        load_config(None, ["data.train=coco:${INSTASEG_DATA}/a.json"])


def test_save_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.lr=0.05", "train.loss_weights={loss_mask: 2.0}", "data.scales=[64]"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text()) == config_to_dict(cfg)
    assert load_config(path) == cfg
    assert merge_overrides(cfg, ["train.lr=0.5"]).train.lr == 0.5 and cfg.train.lr == 0.05
