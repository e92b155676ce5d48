"""`train.max_time_min` shapes the schedule: warmup, cosine decay and the final validation fit the budget."""

from __future__ import annotations

from pathlib import Path

from instaseg.engine.hooks import TimeBudgetHook
from instaseg.engine.trainer import HookBase
from instaseg.predict.validation import train as run_training
from tests.engine.helpers import tiny_overrides


class Record(HookBase):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.max_iters: list[int] = []

    def after_step(self) -> None:
        self.lrs.append(self.trainer.latest["lr"])
        self.max_iters.append(self.trainer.max_iter)


def test_budget_shortens_the_schedule_so_cosine_ends_on_time(tmp_path: Path) -> None:
    budget_s = 12.0
    rec = Record()
    result = run_training(
        output=tmp_path / "run",
        hooks=[rec],
        overrides=tiny_overrides(
            "model.kwargs={sleep_s: 0.03}",  # about 0.04 s a step: a 1000-epoch config cannot fit
            "train.epochs=1000",
            f"train.max_time_min={budget_s / 60}",
            "train.schedule=cosine",
            "train.checkpoint_period=0",
        ),
    )
    configured = 1000 * 6  # 24 images, batch 4
    wall = result.timing["setup"] + result.timing["train"] + result.timing["final"]
    assert result.iterations < configured // 10
    # The shortened schedule ends the run; on a loaded machine steps slow down after the last plan
    # and the hard cap may cut its last few steps, never more (the learning rate is low by then).
    assert result.iterations >= 0.95 * rec.max_iters[-1], (result.iterations, rec.max_iters[-1])
    # The learning rate decayed to (nearly) the end of the cosine instead of being cut at its peak.
    assert rec.lrs[-1] < 0.05 * max(rec.lrs)
    assert result.metrics is not None and (tmp_path / "run" / "metrics.json").is_file()
    assert wall <= budget_s + 2.0, f"run took {wall:.1f} s for a {budget_s} s budget"
    # The budget was used, not wasted: training took most of it.
    assert result.timing["train"] >= 0.5 * budget_s


def test_budget_never_lengthens_a_short_schedule(tmp_path: Path) -> None:
    rec = Record()
    result = run_training(
        output=tmp_path / "run",
        hooks=[rec],
        overrides=tiny_overrides("train.epochs=3", "train.max_time_min=5"),
    )
    assert result.iterations == 18 and set(rec.max_iters) == {18}
    assert result.stop_reason is None


def test_reserve_covers_a_final_validation_dearer_than_the_periodic_ones() -> None:
    # Periodic validations without flips measured at 10 s; the final adds a two-view flipped pass.
    plain = TimeBudgetHook(1.0, fixed_reserve_s=3.0)
    flipped = TimeBudgetHook(1.0, fixed_reserve_s=3.0, final_cost=3.0)
    for hook in (plain, flipped):
        hook.on_eval_timed(10.0)
    assert plain.reserve() == 1.2 * 10.0 + 3.0
    assert flipped.reserve() == 1.2 * 3.0 * 10.0 + 3.0
