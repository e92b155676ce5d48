"""Video instance segmentation on held-out synthetic videos: VIS AP, HOTA, CLEAR, IDF1 for three trackers
over the same detections, our VIS AP against TrackEval's, and video throughput at 320 px.

Stage 1 (the detector) is trained beforehand with the image engine, e.g.
``instaseg train -c configs/video_detector.yaml -o runs/det1``; this script loads it into the temporal
model, trains the association head (stage 2, detector frozen), then evaluates on the ``test`` split of
``video_shapes`` (a disjoint random stream). Writes ``benchmarks/results/video.json``.

    PYTHONPATH=. python benchmarks/bench_video.py --detector runs/det1/checkpoints/last.pt
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe

from instaseg.data.build import build_dataset
from instaseg.engine.video import save_video_checkpoint, train_association
from instaseg.models import get_model
from instaseg.predict.temporal_tracker import TrackerConfig
from instaseg.predict.video_eval import detect_videos, ground_truth, score_results, track_videos

RESULTS = Path(__file__).parent / "results" / "video.json"


def throughput(model_path: Path, size: int, frames: int) -> dict:
    """Stream a rendered ``size`` px MP4 through ``run_video`` (temporal tracker, overlay on) and split
    the per-frame time into detection and tracking."""
    import cv2

    from instaseg.models.checkpoint import load_model
    from instaseg.predict.predictor import Predictor
    from instaseg.predict.video import run_video

    ds = build_dataset(f"video_shapes:1:{frames}:{size}", split="test")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.mp4"
        writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 25, (size, size))
        for i in range(len(ds)):
            writer.write(cv2.cvtColor(ds.load_record(i).image, cv2.COLOR_RGB2BGR))
        writer.release()
        state = torch.load(model_path, weights_only=False)
        state["model_spec"]["kwargs"].update(min_size=size, max_size=size)
        torch.save(state, Path(tmp) / "m.pt")
        model, meta = load_model(Path(tmp) / "m.pt")
        predictor = Predictor.from_model(model, meta)
        run_video(predictor, src, Path(tmp) / "warm", max_frames=3, log=lambda m: None)  # warm-up
        s = run_video(predictor, src, Path(tmp) / "out", log=lambda m: None)
    per_frame = s.wall_s / s.frames
    return {"size": size, "frames": s.frames, "fps_wall": s.fps, "cpu_s_per_frame": s.cpu_s / s.frames,
            "wall_s_per_frame": per_frame, "detect_s_per_frame": s.detect_s / s.frames,
            "track_s_per_frame": s.track_s / s.frames, "tracking_share": s.track_s / s.wall_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", required=True,
                    help="stage-1 checkpoint (maskrcnn_r18_slim on video frames)")
    ap.add_argument("--train", default="video_shapes:200:16:128")
    ap.add_argument("--test", default="video_shapes:100:24:128",
                    help="its test split is used (N // 5 videos)")
    ap.add_argument("--assoc-iters", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-videos", type=int, default=None)
    ap.add_argument("--speed-size", type=int, default=320)
    ap.add_argument("--speed-frames", type=int, default=40)
    ap.add_argument("--model-out", default="runs/video_model.pt")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out: dict = {"machine": describe(),
                 "load_avg_start": os.getloadavg()[0], "torch_threads": args.threads,
                 "date": time.strftime("%Y-%m-%d"), "args": vars(args)}

    model = get_model("maskrcnn_r18_slim_video", weights=args.detector)
    train = build_dataset(args.train, split="train")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    losses = train_association(model, train, iters=args.assoc_iters, batch_size=args.batch, log=print)
    out["association"] = {"iters": args.assoc_iters, "batch": args.batch,
                          "loss_first10": float(np.mean(losses[:10])),
                          "loss_last10": float(np.mean(losses[-10:])), "cpu_s": time.process_time() - cpu0,
                          "wall_s": time.perf_counter() - wall0}
    save_video_checkpoint(model, args.model_out, class_names=train.class_names,
                          category_ids=train.category_ids,
                          model_kwargs={"num_classes": train.num_classes})
    model.eval()

    test = build_dataset(args.test, split="test")
    dets, wall, cpu = detect_videos(model, test, min_score=0.1, max_videos=args.max_videos, log=print)
    frames = sum(len(v) for v in dets)
    out["detection"] = {"videos": len(dets), "frames": frames, "cpu_s_per_frame": cpu / frames,
                        "wall_s_per_frame": wall / frames}
    gt = ground_truth(test, args.max_videos)
    variants = {
        "temporal": ("temporal", TrackerConfig()),
        "temporal_no_embed": ("temporal", TrackerConfig(embed_weight=0.0, iou_weight=1.0)),
        "temporal_no_smooth": ("temporal", TrackerConfig(mask_momentum=0.0)),
        "bytetrack": ("bytetrack", TrackerConfig()),
        "iou": ("iou", TrackerConfig()),
    }
    table = {}
    for name, (kind, cfg) in variants.items():
        results, track_cpu = track_videos(dets, test, kind, cfg)
        row = score_results(gt, results)
        row["track_cpu_ms_per_frame"] = 1000 * track_cpu / frames
        row["ap_matches_trackeval"] = abs(row["AP"] - row["trackeval_AP"]) <= 1e-6
        table[name] = row
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    out["trackers"] = table
    t, iou = table["temporal"], table["iou"]
    out["targets"] = {
        "vis_ap>=0.60": t["AP"] >= 0.60,
        "idsw<=half_iou": t["IDSW"] <= iou["IDSW"] / 2,
        "hota>=iou+0.10": t["HOTA"] >= iou["HOTA"] + 0.10,
        "ap_equals_trackeval": all(r["ap_matches_trackeval"] for r in table.values()),
    }
    out["throughput"] = throughput(Path(args.model_out), args.speed_size, args.speed_frames)
    out["targets"]["tracking_share<=5%"] = out["throughput"]["tracking_share"] <= 0.05
    print(json.dumps(out["throughput"], indent=1))
    print(json.dumps(out["targets"], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
