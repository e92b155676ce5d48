"""A real uvicorn server on 127.0.0.1 around a slow fake predictor, for load tests in a subprocess (so
the server's own memory can be measured apart from the clients').

    python -m tests.serve.slow_server PORT DELAY_S MAX_QUEUE MAX_UPLOAD_BYTES
"""

from __future__ import annotations

import sys

import torch
import uvicorn

from instaseg.predict.predictor import Predictor
from instaseg.serve.app import ServiceLimits, create_app
from tests.serve.fakes import CLASS_NAMES, BlobModel


def main(argv: list[str]) -> None:
    port, delay, max_queue, max_upload = int(argv[0]), float(argv[1]), int(argv[2]), int(argv[3])
    torch.set_num_threads(1)
    limits = ServiceLimits(max_upload_bytes=max_upload, max_queue=max_queue)
    app = create_app(Predictor(BlobModel(delay=delay), CLASS_NAMES), None, limits)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
