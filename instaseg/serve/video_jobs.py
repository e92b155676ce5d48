"""``POST /segment_video`` (upload a video, get a job id) and ``GET /segment_video/{job_id}`` (poll).

The upload goes through the service's limits (bytes and the admission queue, as the image endpoints);
each frame is checked against the pixel limit and at most ``max_frames`` frames are processed. The job
runs on the service's single worker thread (so it never competes with image requests for the cores)
and streams the video from a temporary file through :func:`instaseg.predict.video.run_video`. Polling
returns ``status`` (queued, running, done, failed), frames done so far, and when done the YouTube-VIS
results (one entry per track, RLE masks) plus the summary (frames, unreadable frames, frames/s).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Query, UploadFile

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
MAX_JOBS = 32  # finished jobs beyond this are forgotten, oldest first


class VideoJobs:
    """Thread-safe job table: id -> state dict."""

    def __init__(self) -> None:
        self.jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def new(self) -> str:
        job_id = uuid.uuid4().hex[:16]
        with self.lock:
            self.jobs[job_id] = {"status": "queued", "frames_done": 0}
            while len(self.jobs) > MAX_JOBS:
                old = next((k for k, v in self.jobs.items() if v["status"] in ("done", "failed")), None)
                if old is None:
                    break
                self.jobs.pop(old)
        return job_id

    def update(self, job_id: str, **fields: Any) -> None:
        with self.lock:
            if job_id in self.jobs:
                self.jobs[job_id].update(fields)

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            job = self.jobs.get(job_id)
            return None if job is None else dict(job)

    def running(self) -> int:
        with self.lock:
            return sum(1 for v in self.jobs.values() if v["status"] in ("queued", "running"))


def add_video_routes(app: FastAPI, predictor: Any, limits: Any, submit: Callable[[Callable[[], Any]], Any],
                     *, max_frames: int = 3000) -> VideoJobs:
    """Register the video endpoints on ``app``; ``submit(fn)`` runs ``fn`` on the service's worker."""
    jobs = VideoJobs()

    @app.post("/segment_video", summary="Upload a video; returns a job id to poll")
    async def segment_video(
        file: UploadFile = File(..., description="the video (mp4, avi, mov, mkv, webm)"),
        tracker: str = Query("temporal", description="temporal, bytetrack or iou"),
    ) -> dict[str, Any]:
        from instaseg.predict.video import TRACKERS

        if predictor is None:
            raise HTTPException(503, "no instance-segmentation model is loaded (start with --checkpoint)")
        if tracker not in TRACKERS:
            raise HTTPException(422, f"tracker must be one of {', '.join(TRACKERS)}")
        name = file.filename or "upload.mp4"
        suffix = Path(name).suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise HTTPException(400, f"upload {name!r} is not a video ({', '.join(VIDEO_SUFFIXES)})")
        data = await file.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, f"upload {name!r} is over the {limits.max_upload_bytes} byte limit")
        if not data:
            raise HTTPException(400, f"upload {name!r} is empty (0 bytes), expected a video")
        if jobs.running() > limits.max_queue:
            raise HTTPException(503, "busy: too many video jobs queued; retry later")
        workdir = Path(tempfile.mkdtemp(prefix="instaseg-video-"))
        (workdir / f"input{suffix}").write_bytes(data)
        job_id = jobs.new()

        def work() -> None:
            from instaseg.predict.video import run_video

            jobs.update(job_id, status="running")

            def log(msg: str) -> None:
                if msg.startswith("frame "):
                    jobs.update(job_id, frames_done=int(msg.split()[1].rstrip(":")))

            try:
                summary = _checked_run(run_video, predictor, workdir, suffix, tracker, limits, max_frames,
                                       log)
                results = json.loads((workdir / "out" / "results.json").read_text())
                jobs.update(job_id, status="done", frames_done=summary.frames, results=results,
                            summary={"frames": summary.frames, "unreadable_frames": summary.corrupt,
                                     "tracks": summary.tracks, "fps": round(summary.fps, 2)})
            except Exception as exc:  # reported to the client; the service goes on
                first = str(exc).splitlines()[0] if str(exc) else repr(exc)
                jobs.update(job_id, status="failed", error=first)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

        submit(work)
        return {"job_id": job_id, "status": "queued", "poll": f"/segment_video/{job_id}"}

    @app.get("/segment_video/{job_id}", summary="Status and, when done, the results of a video job")
    async def video_job(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no video job {job_id!r}")
        return {"job_id": job_id, **job}

    return jobs


def _checked_run(run_video: Callable[..., Any], predictor: Any, workdir: Path, suffix: str, tracker: str,
                 limits: Any, max_frames: int, log: Callable[[str], None]) -> Any:
    """Run the video job after checking the frame size against the pixel limit."""
    import cv2

    from instaseg.errors import DataError

    cap = cv2.VideoCapture(str(workdir / f"input{suffix}"))
    try:
        if not cap.isOpened():
            raise DataError(None, "cannot open the uploaded video (unsupported codec or not a video)")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if w * h > limits.max_pixels:
        raise DataError(None, f"frames of {w}x{h} are over the {limits.max_pixels} pixel limit")
    return run_video(predictor, workdir / f"input{suffix}", workdir / "out", tracker=tracker, overlay=False,
                     max_frames=max_frames, log=log)
