"""Pictures of point clouds: matplotlib scatter renders from a few viewpoints, and a self-contained
HTML viewer (no CDN: the points are embedded, a canvas draws them, drag rotates)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VIEWS = ((30, 225), (30, 45), (75, 270))  # (elevation, azimuth) degrees


def render_views(
    panels: list[tuple[str, np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    views: tuple[tuple[float, float], ...] = VIEWS,
    max_points: int = 30000,
    seed: int = 0,
) -> Path:
    """A PNG grid: one row per viewpoint, one column per panel ``(title, xyz (N, 3), rgb (N, 3) in
    [0, 1])`` (e.g. ground truth beside prediction). At most ``max_points`` points are drawn per panel."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(4.2 * len(panels), 3.6 * len(views)))
    rng = np.random.default_rng(seed)
    for col, (title, xyz, rgb) in enumerate(panels):
        sel = (
            rng.choice(len(xyz), max_points, replace=False) if len(xyz) > max_points else np.arange(len(xyz))
        )
        p, c = xyz[sel], np.clip(rgb[sel], 0, 1)
        for row, (elev, azim) in enumerate(views):
            ax = fig.add_subplot(len(views), len(panels), row * len(panels) + col + 1, projection="3d")
            ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=c, s=0.6, linewidths=0)
            ax.view_init(elev, azim)
            if len(p):
                ax.set_box_aspect(np.maximum(np.ptp(p, 0), 1e-3))
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>%(title)s</title>
<style>body{margin:0;background:#111;color:#ddd;font:13px sans-serif}canvas{display:block}
#info{position:absolute;left:8px;top:6px}</style></head><body><div id="info">%(title)s: drag to rotate,
wheel to zoom</div><canvas id="c"></canvas><script>
const D=%(data)s;const cv=document.getElementById('c'),g=cv.getContext('2d');
let W,H,yaw=0.8,pitch=0.6,zoom=1;function rs(){W=cv.width=innerWidth;H=cv.height=innerHeight;draw()}
function draw(){g.fillStyle='#111';g.fillRect(0,0,W,H);const n=D.p.length/3,cy=Math.cos(yaw),sy=Math.sin(yaw),
cp=Math.cos(pitch),sp=Math.sin(pitch),s=zoom*Math.min(W,H)/D.r/2.2,o=[];for(let i=0;i<n;i++){
const x=D.p[3*i]-D.c[0],y=D.p[3*i+1]-D.c[1],z=D.p[3*i+2]-D.c[2];const X=cy*x-sy*y,Y=sy*x+cy*y;
const Zs=cp*z-sp*Y,Ds=sp*z+cp*Y;o.push([Ds,W/2+s*X,H/2-s*Zs,i])}o.sort((a,b)=>a[0]-b[0]);
for(const [d,x,y,i] of o){g.fillStyle='rgb('+D.k[3*i]+','+D.k[3*i+1]+','+D.k[3*i+2]+')';g.fillRect(x,y,2,2)}}
let drag=null;cv.onmousedown=e=>drag=[e.clientX,e.clientY];onmouseup=()=>drag=null;
onmousemove=e=>{if(!drag)return;yaw+=(e.clientX-drag[0])*0.01;pitch+=(e.clientY-drag[1])*0.01;
drag=[e.clientX,e.clientY];draw()};cv.onwheel=e=>{zoom*=e.deltaY<0?1.1:0.9;draw();e.preventDefault()};
onresize=rs;rs();</script></body></html>"""


def write_viewer(
    path: str | Path,
    xyz: np.ndarray,
    rgb: np.ndarray,
    *,
    title: str = "instaseg points",
    max_points: int = 40000,
    seed: int = 0,
) -> Path:
    """A standalone HTML viewer of ``xyz`` (N, 3) coloured ``rgb`` (N, 3) in [0, 1] (subsampled to
    ``max_points``; no network access needed to open it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sel = rng.choice(len(xyz), max_points, replace=False) if len(xyz) > max_points else np.arange(len(xyz))
    p, c = xyz[sel].astype(np.float64), np.clip(np.round(rgb[sel] * 255), 0, 255).astype(int)
    centre = p.mean(0) if len(p) else np.zeros(3)
    radius = float(np.abs(p - centre).max()) if len(p) else 1.0
    data = {
        "p": np.round(p, 3).ravel().tolist(),
        "k": c.ravel().tolist(),
        "c": centre.round(3).tolist(),
        "r": max(radius, 1e-3),
    }
    safe_title = title.replace("<", "&lt;").replace(">", "&gt;")
    path.write_text(_HTML % {"title": safe_title, "data": json.dumps(data)})
    return path
