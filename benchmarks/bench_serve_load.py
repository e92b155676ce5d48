"""Load test of ``instaseg serve`` on loopback: N concurrent clients for a fixed time.

1. Saves a randomly initialised light model (``maskrcnn_r18_slim``) checkpoint to a temp folder
   (or uses ``--checkpoint``).
2. Direct baseline: ``Predictor.predict`` on the decoded image in a loop for ``--direct-seconds``,
   before and after the load test (the machine may be shared; the two are pooled), half from the main
   thread and half from a worker thread; the faster of the two is the baseline (the stricter target).
3. Starts ``instaseg serve`` on 127.0.0.1 at a free port (a subprocess, exactly as a user would),
   waits for ``/health``, then ``--clients`` threads POST the image to ``/segment`` until
   ``--seconds`` have passed (each loop is bounded by the deadline; the server is stopped at the end).

Reports requests/s, p50/p99 latency, the status-code histogram (target: zero 5xx) and the ratio of
service throughput to direct throughput (target >= 0.9). Only loopback traffic.

    python benchmarks/bench_serve_load.py [--clients 16] [--seconds 60] [--image PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "serve_load.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save_light_checkpoint(path: Path) -> None:
    import torch

    from instaseg.engine.checkpoint import save_checkpoint
    from instaseg.models import get_model

    torch.manual_seed(0)
    kwargs = {"num_classes": 3}
    model = get_model("maskrcnn_r18_slim", **kwargs)
    save_checkpoint(
        {"model": model.state_dict(), "model_spec": {"name": "maskrcnn_r18_slim", "kwargs": kwargs},
         "class_names": ["background", "a", "b"], "category_ids": [0, 1, 2], "config": {}},
        path,
    )


def _direct(checkpoint: Path, image_path: Path, seconds: float, score: float) -> dict:
    """Direct predictor throughput, measured both from the main thread and from a worker thread (torch
    behaves differently in each on a busy machine); the better of the two is the baseline."""
    from concurrent.futures import ThreadPoolExecutor

    from instaseg.data.io import read_image
    from instaseg.engine.predictor import Predictor

    pred = Predictor.from_checkpoint(checkpoint, score_threshold=score)
    image = read_image(image_path)
    main = _direct_loop(pred, image, seconds / 2)
    with ThreadPoolExecutor(1) as pool:
        worker = pool.submit(_direct_loop, pred, image, seconds / 2).result()
    best = max(main["throughput_rps"], worker["throughput_rps"])
    return {"main_thread": main, "worker_thread": worker, "throughput_rps": best}


def _direct_loop(pred, image: np.ndarray, seconds: float) -> dict:
    for _ in range(3):  # warm-up (allocator, lazy init)
        pred.predict(image)
    n, start = 0, time.perf_counter()
    instances = 0
    while time.perf_counter() - start < seconds:
        instances += len(pred.predict(image)["rles"])
        n += 1
    elapsed = time.perf_counter() - start
    return {"requests": n, "seconds": round(elapsed, 2), "throughput_rps": round(n / elapsed, 3),
            "mean_instances": round(instances / max(n, 1), 1)}


def _load(url: str, payload: bytes, name: str, clients: int, seconds: float, score: float) -> dict:
    import httpx

    latencies: list[float] = []
    codes: Counter = Counter()
    errors: Counter = Counter()
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = http.post(f"{url}/segment", params={"score_threshold": score},
                                  files={"file": (name, payload, "image/jpeg")})
                    code = r.status_code
                except httpx.HTTPError as exc:
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    codes[code] += 1
                    if code == 200:
                        latencies.append(dt)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    ok = len(latencies)
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests_ok": ok,
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "client_errors": dict(errors),
        "server_errors_5xx": sum(v for k, v in codes.items() if k >= 500),
        "throughput_rps": round(ok / elapsed, 3),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if ok else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if ok else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: a fresh random maskrcnn_r18_slim")
    parser.add_argument("--image", default=None, help="default: the first Penn-Fudan image in $INSTASEG_DATA")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--direct-seconds", type=float, default=20.0, help="before and after the load")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (direct and server)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    image = Path(args.image) if args.image else None
    if image is None:
        root = Path(os.environ.get("INSTASEG_DATA", "../shared/data"))
        image = sorted((root / "pennfudan" / "PNGImages").glob("*.png"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else Path(tmp) / "light.pt"
        if not args.checkpoint:
            _save_light_checkpoint(ckpt)
        # Send JPEG bytes (what clients usually upload); the direct baseline decodes the same file.
        import cv2

        from instaseg.data.io import read_image

        jpg = Path(tmp) / "image.jpg"
        bgr = cv2.cvtColor(read_image(image), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(jpg), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        payload = jpg.read_bytes()
        # The machine may be shared: measure the direct baseline before and after the load test.
        print(f"direct predictor baseline for {args.direct_seconds:.0f} s ...", flush=True)
        direct_before = _direct(ckpt, jpg, args.direct_seconds, args.score_threshold)
        print(json.dumps(direct_before), flush=True)

        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        exe = Path(sys.executable).with_name("instaseg")
        cmd = [str(exe), "serve", "--checkpoint", str(ckpt), "--host", "127.0.0.1", "--port", str(port),
               "--score-threshold", str(args.score_threshold)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            import httpx

            deadline = time.time() + 120
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"server exited early: {server.stderr.read()}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("server did not become healthy in 120 s")
                time.sleep(0.5)
            warm = {"file": ("w.jpg", payload, "image/jpeg")}
            httpx.post(f"{url}/segment", files=warm, timeout=60)
            print(f"{args.clients} clients for {args.seconds:.0f} s against {url} ...", flush=True)
            load = _load(url, payload, jpg.name, args.clients, args.seconds, args.score_threshold)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        direct_after = _direct(ckpt, jpg, args.direct_seconds, args.score_threshold)
        print(json.dumps(direct_after), flush=True)
    pooled = {}
    for where in ("main_thread", "worker_thread"):
        n = direct_before[where]["requests"] + direct_after[where]["requests"]
        secs = direct_before[where]["seconds"] + direct_after[where]["seconds"]
        pooled[where] = round(n / secs, 3)
    direct = {"before": direct_before, "after": direct_after, "pooled_rps": pooled,
              "throughput_rps": max(pooled.values())}
    ratio = load["throughput_rps"] / direct["throughput_rps"] if direct["throughput_rps"] else 0.0
    report = {
        "benchmark": "serve_load",
        "model": "maskrcnn_r18_slim (random init)" if not args.checkpoint else args.checkpoint,
        "image": str(image),
        "payload_bytes": len(payload),
        "direct": direct,
        "service": load,
        "service_over_direct": round(ratio, 3),
        "machine": platform.platform(),
        "targets": "zero 5xx; service throughput >= 0.9 x direct",
        "passed": load["server_errors_5xx"] == 0 and ratio >= 0.9 and load["requests_ok"] > 0,
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}; passed={report['passed']}")


if __name__ == "__main__":
    main()
