import pytest
from torch import nn

from instaseg.errors import ConfigError
from instaseg.models import registry


def test_register_get_and_duplicate_raises(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", {})
    monkeypatch.setattr(registry, "_ensure_builtin_models", lambda: None)

    @registry.register_model()
    def tiny(*, num_classes: int = 2) -> nn.Module:
        return nn.Linear(1, num_classes)

    assert registry.list_models() == ["tiny"]
    assert registry.get_model("tiny", num_classes=5).out_features == 5
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model("tiny")(tiny)
    with pytest.raises(ConfigError, match="unknown model 'nope'.*tiny"):
        registry.get_model("nope")
