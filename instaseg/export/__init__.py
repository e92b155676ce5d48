"""instaseg.export: ONNX (and TorchScript) export of every model through one path.

- :mod:`.graphs`: the export-graph signature (``image [3, H, W] + score_thresh -> boxes, scores,
  labels, box-relative masks``); each model provides its graph (``model.export_graph()``);
- :mod:`.onnx_export` / :mod:`.torchscript_export`: trace, add metadata, check, verify, write atomically;
- loading an export back is the predictor's side, :mod:`instaseg.predict.runtime`:
  ``load_onnx_model(path) -> (model, meta)``; ONNX Runtime and TorchScript models share one base
  (``ExportedDetector``: ``forward_lowres`` and ``__call__`` like a torch model);
- :mod:`.commands`: ``instaseg export``.
"""
