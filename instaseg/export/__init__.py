"""instaseg.export: ONNX (and TorchScript) export of every model through one path.

- :mod:`.graphs`: the export-graph protocol (``image [3, H, W] + score_threshold -> boxes, scores,
  labels, low-resolution masks``) and how each model provides one;
- :mod:`.onnx_export` / :mod:`.torchscript_export`: trace, add metadata, check, verify, write atomically;
- :mod:`.runtime`: ``load_onnx_model(path) -> (model, meta)``, an ONNX Runtime model callable like an
  eval-mode torch detection model; :mod:`.postprocess`: the mask paste shared with PyTorch;
- :mod:`.commands`: ``instaseg export``.
"""
