"""Load test of ``instaseg serve`` on loopback: N concurrent clients, bounded in time and requests.

1. Saves a randomly initialised light model (``maskrcnn_r18_slim``) checkpoint to a temp folder
   (or uses ``--checkpoint``).
2. Direct baseline (skipped with ``--direct-seconds 0``): ``Predictor.predict`` on the decoded image in
   a loop, before and after the load test (the machine may be shared; the two are pooled), half from
   the main thread and half from a worker thread; the faster of the two is the baseline.
3. Starts ``instaseg serve --max-queue Q`` on 127.0.0.1 at a free port (a subprocess, as a user would),
   waits for ``/health``, then ``--clients`` threads POST the image to ``/segment`` until ``--seconds``
   have passed or each has sent ``--max-requests``; a client answered 503 waits its ``Retry-After``
   (at most ``--max-backoff`` s). The server's RSS is sampled from /proc every 20 ms, from a
   one-client warm-up (``--warmup-seconds``; its peak: the working set with nothing waiting) to the
   end of the load, and ``/health`` is probed every 0.25 s during the load; the server is stopped at
   the end.
4. With ``--compare-unbounded``, the same load against a server whose queue admits every client
   (``--max-queue`` = clients: every waiting client's upload is held, as before the queue was bounded).

Reports requests/s, p50/p99 latency, the status-code histogram (target: only 200 and 503, every 503
with Retry-After), the growth of the server's peak RSS under load over its peak with one request at a
time (target: under 3 x (1 + max_queue) x upload size + 8 MB: what the admitted requests can hold, each
waiting upload costing about 3x its size (measured with the unbounded queue), independent of the number
of clients), /health latency, and the ratio of service throughput to direct throughput. Only loopback
traffic. Linux (reads /proc).

    python benchmarks/bench_serve_load.py [--clients 64] [--seconds 30] [--scale 3] [--compare-unbounded]
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

RESULTS = Path(__file__).parent / "results" / "serve_load_queue.json"


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
    from instaseg.predict.predictor import Predictor

    pred = Predictor.from_checkpoint(checkpoint, score_thresh=score)
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
        instances += len(pred.predict(image))
        n += 1
    elapsed = time.perf_counter() - start
    return {"requests": n, "seconds": round(elapsed, 2), "throughput_rps": round(n / elapsed, 3),
            "mean_instances": round(instances / max(n, 1), 1)}


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _load(url: str, pid: int, payload: bytes, name: str, args: argparse.Namespace) -> dict:
    import httpx

    latencies: list[float] = []
    codes: Counter = Counter()
    errors: Counter = Counter()
    retry_after: Counter = Counter()
    health: list[float] = []
    rss: list[int] = []
    lock = threading.Lock()
    done = threading.Event()

    def client(deadline: float) -> None:
        with httpx.Client(timeout=120) as http:
            for _ in range(args.max_requests):
                if time.perf_counter() >= deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = http.post(f"{url}/segment", params={"score_thresh": args.score_thresh},
                                  files={"file": (name, payload, "image/jpeg")})
                except httpx.HTTPError as exc:
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                dt = time.perf_counter() - t0
                wait = 0.0
                with lock:
                    codes[r.status_code] += 1
                    if r.status_code == 200:
                        latencies.append(dt)
                    elif r.status_code == 503:
                        value = r.headers.get("retry-after", "missing")
                        retry_after[value] += 1
                        wait = float(value) if value.isdigit() else 1.0
                if wait:
                    time.sleep(max(0.0, min(wait, args.max_backoff, deadline - time.perf_counter())))

    def sampler() -> None:
        while not done.is_set():
            rss.append(_rss_bytes(pid))
            time.sleep(0.02)

    def prober() -> None:
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                t0 = time.perf_counter()
                ok = http.get(f"{url}/health").status_code == 200
                with lock:
                    health.append(time.perf_counter() - t0 if ok else float("inf"))
                time.sleep(0.25)

    idle_rss = _rss_bytes(pid)
    rss_thread = threading.Thread(target=sampler)
    rss_thread.start()
    # Warm-up, one request at a time (at least 3, for --warmup-seconds): its peak is the server's
    # steady working set when nothing waits (the allocator keeps growing for a few requests).
    warm_until, warm_requests = time.perf_counter() + args.warmup_seconds, 0
    with httpx.Client(timeout=120) as http:
        while warm_requests < 3 or time.perf_counter() < warm_until:
            http.post(f"{url}/segment", files={"file": (name, payload, "image/jpeg")}).raise_for_status()
            warm_requests += 1
    time.sleep(0.1)
    single_peak = max(rss)
    n_warm = len(rss)
    probe_thread = threading.Thread(target=prober)
    probe_thread.start()
    watchers = [rss_thread, probe_thread]
    deadline = time.perf_counter() + args.seconds
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(deadline,)) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    done.set()
    for t in watchers:
        t.join()
    lat = np.asarray(latencies) * 1000
    hl = np.asarray(health) * 1000
    ok = len(latencies)
    peak = max(rss[n_warm:])
    return {
        "clients": args.clients,
        "seconds": round(elapsed, 2),
        "requests_ok": ok,
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "client_errors": dict(errors),
        "retry_after_values": dict(sorted(retry_after.items())),
        "server_errors_5xx_other_than_503": sum(v for k, v in codes.items() if k >= 500 and k != 503),
        "throughput_rps": round(ok / elapsed, 3),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if ok else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if ok else None,
        "health_ms_p50": round(float(np.percentile(hl, 50)), 1),
        "health_ms_max": round(float(hl.max()), 1),
        "health_probes": len(health),
        "rss_idle_mb": round(idle_rss / 2**20, 1),
        "rss_one_at_a_time_peak_mb": round(single_peak / 2**20, 1),
        "warmup_requests_one_at_a_time": warm_requests,
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_growth_mb": round((peak - single_peak) / 2**20, 1),
        "rss_samples": len(rss),
        "all_uploads_held_mb": round(args.clients * len(payload) / 2**20, 1),
    }


def _run_server(ckpt: Path, payload: bytes, name: str, max_queue: int, args: argparse.Namespace) -> dict:
    """Start ``instaseg serve`` on loopback, warm it up, run the load, stop it; the load's report."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "instaseg.cli", "serve", "--checkpoint", str(ckpt), "--host", "127.0.0.1",
           "--port", str(port), "--score-thresh", str(args.score_thresh), "--max-queue", str(max_queue)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a full pipe would stall the server
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            deadline = time.time() + 120
            while True:
                if server.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"server exited early: {log.read()[-2000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("server did not become healthy in 120 s")
                time.sleep(0.5)
            what = f"{args.clients} clients for {args.seconds:.0f} s against {url} (--max-queue {max_queue})"
            print(what + " ...", flush=True)
            load = _load(url, server.pid, payload, name, args)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    load["max_queue"] = max_queue
    print(json.dumps(load), flush=True)
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: a fresh random maskrcnn_r18_slim")
    parser.add_argument("--image", default=None, help="default: the first Penn-Fudan image in $INSTASEG_DATA")
    parser.add_argument("--scale", type=float, default=3.0, help="resize the image by this before upload")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=50, help="per client")
    parser.add_argument("--warmup-seconds", type=float, default=10.0, help="one client, before the load")
    parser.add_argument("--max-queue", type=int, default=8, help="instaseg serve --max-queue")
    parser.add_argument("--max-backoff", type=float, default=2.0, help="longest Retry-After wait (s)")
    parser.add_argument("--compare-unbounded", action="store_true",
                        help="also run with --max-queue = clients (every upload admitted)")
    parser.add_argument("--direct-seconds", type=float, default=10.0, help="before and after; 0 skips")
    parser.add_argument("--score-thresh", type=float, default=0.5)
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
    direct: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else Path(tmp) / "light.pt"
        if not args.checkpoint:
            _save_light_checkpoint(ckpt)
        # Send JPEG bytes (what clients usually upload); the direct baseline decodes the same file.
        import cv2

        from instaseg.data.io import read_image

        jpg = Path(tmp) / "image.jpg"
        bgr = cv2.cvtColor(read_image(image), cv2.COLOR_RGB2BGR)
        if args.scale != 1.0:
            bgr = cv2.resize(bgr, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(jpg), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        payload = jpg.read_bytes()
        print(f"upload: {bgr.shape[1]}x{bgr.shape[0]} JPEG, {len(payload) / 2**20:.2f} MB", flush=True)
        if args.direct_seconds > 0:
            print(f"direct predictor baseline for {args.direct_seconds:.0f} s ...", flush=True)
            direct["before"] = _direct(ckpt, jpg, args.direct_seconds, args.score_thresh)
            print(json.dumps(direct["before"]), flush=True)
        load = _run_server(ckpt, payload, jpg.name, args.max_queue, args)
        unbounded = None
        if args.compare_unbounded:
            unbounded = _run_server(ckpt, payload, jpg.name, args.clients, args)
        if args.direct_seconds > 0:
            direct["after"] = _direct(ckpt, jpg, args.direct_seconds, args.score_thresh)
            print(json.dumps(direct["after"]), flush=True)
    ratio = None
    if direct:
        pooled = {}
        for where in ("main_thread", "worker_thread"):
            n = direct["before"][where]["requests"] + direct["after"][where]["requests"]
            secs = direct["before"][where]["seconds"] + direct["after"][where]["seconds"]
            pooled[where] = round(n / secs, 3)
        direct.update(pooled_rps=pooled, throughput_rps=max(pooled.values()))
        ratio = round(load["throughput_rps"] / max(direct["throughput_rps"], 1e-9), 3)
    only_200_503 = set(load["status_codes"]) <= {"200", "503"} and not load["client_errors"]
    retry_ok = "missing" not in load["retry_after_values"]
    # Each waiting upload costs ~3x its size (its bytes, the spooled multipart part, read buffers), so the
    # admitted requests can hold 3 x (1 + max_queue) uploads; 8 MB for allocator noise.
    rss_bound_mb = round((3 * (1 + args.max_queue) * len(payload)) / 2**20 + 8, 1)
    flat = load["rss_growth_mb"] < rss_bound_mb
    report = {
        "benchmark": "serve_load",
        "model": "maskrcnn_r18_slim (random init)" if not args.checkpoint else args.checkpoint,
        "image": str(image),
        "scale": args.scale,
        "payload_bytes": len(payload),
        "direct": direct or None,
        "service": load,
        "unbounded_queue": unbounded,
        "service_over_direct": ratio,
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "targets": "only 200/503 (no client errors); every 503 has Retry-After; server peak RSS under "
                   "load - peak with one request at a time < rss_bound_mb; requests served",
        "rss_bound_mb": rss_bound_mb,
        "passed": only_200_503 and retry_ok and flat and load["requests_ok"] > 0,
    }
    print(json.dumps(report, indent=2))
    summary = (f"service: {load['requests_ok']} ok ({load['throughput_rps']} rps), "
               f"codes {load['status_codes']}, RSS +{load['rss_growth_mb']} MB "
               f"(bound {rss_bound_mb} MB; all uploads held: {load['all_uploads_held_mb']} MB), "
               f"/health max {load['health_ms_max']} ms")
    if unbounded:
        summary += f"; unbounded queue: RSS +{unbounded['rss_growth_mb']} MB"
    if ratio is not None:
        summary += f"; service/direct {ratio}"
    print(summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}; passed={report['passed']}")


if __name__ == "__main__":
    main()
