"""One inference path: the :class:`~instaseg.predict.predictor.Predictor` (model -> ``Instances``), run
over images and videos (:mod:`.files`), over a dataset for COCO metrics (:mod:`.dataset`), and as the
validation the trainer is given (:mod:`.validation`). Sits above ``engine`` and ``evaluation``.
"""
