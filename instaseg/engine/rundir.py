"""Run directories: a new run's (numbered, never a user's non-empty folder) and a resumed run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instaseg.config import Config, config_from_dict, merge_overrides
from instaseg.engine import distributed as du
from instaseg.errors import CheckpointError, ConfigError
from instaseg.models.checkpoint import load_checkpoint


def numbered_dir(base: str | Path) -> Path:
    """``base`` if it is missing or empty, else the first free ``base2``, ``base3``..."""
    base = Path(base)
    if not base.exists() or (base.is_dir() and not any(base.iterdir())):
        return base
    i = 2
    while True:
        cand = base.with_name(f"{base.name}{i}")
        if not cand.exists() or (cand.is_dir() and not any(cand.iterdir())):
            return cand
        i += 1


def resolve_resume(path: str | Path) -> tuple[Path, Path]:
    """``(run_dir, last.pt)`` for a run directory or a checkpoint file to resume from."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise CheckpointError(f"{path}: cannot resume, no checkpoints/last.pt in this run directory")
        return path, ckpt
    if not path.is_file():
        raise CheckpointError(f"{path}: cannot resume, no such run directory or checkpoint")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run_dir, path


def choose_run_dir(cfg: Config, output: str | Path | None) -> Path:
    """A new run's directory: ``output`` (must be missing or empty) or a numbered ``output.dir``."""
    if output is None:
        return numbered_dir(cfg.output.dir)
    run_dir = Path(output)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ConfigError(
            f"{run_dir}: output directory exists and is not empty; pass --resume {run_dir} to "
            "continue that run, or choose a new --output"
        )
    return run_dir


def agree_run_dir(cfg: Config, output: str | Path | None) -> Path:
    """:func:`choose_run_dir` as rank 0 decides it (numbering would race otherwise), on every rank;
    its error, if any, is raised on every rank."""
    answer: tuple[str, str] = ("", "")
    if du.is_main_process():
        try:
            answer = ("ok", str(choose_run_dir(cfg, output)))
        except ConfigError as exc:
            answer = ("error", str(exc))
    kind, value = du.broadcast_object(answer)  # type: ignore[misc]
    if kind == "error":
        raise ConfigError(value)
    return Path(value)


def load_resume(
    resume: str | Path, output: str | Path | None, overrides: list[str]
) -> tuple[Config, Path, dict[str, Any]]:
    """Config (the run's own, plus ``overrides``), run directory and state of a run to resume."""
    run_dir, ckpt = resolve_resume(resume)
    if output is not None and Path(output).resolve() != run_dir.resolve():
        raise ConfigError(f"--output {output} conflicts with --resume {resume} (run dir {run_dir})")
    state = load_checkpoint(ckpt)
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{ckpt}: no config in this checkpoint; cannot resume")
    cfg = config_from_dict(saved, where=f"{ckpt}: ")
    if overrides:
        cfg = merge_overrides(cfg, overrides)
    return cfg, run_dir, state
