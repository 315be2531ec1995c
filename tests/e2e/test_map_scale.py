"""The Clusters map at scale in a real browser: time to first paint and to a lasso result at
100K and 1M points (synthetic workspaces: a clustering and a 2-D map, no pool), and the lasso
selects every row inside it (checked against a brute-force point-in-polygon over all rows,
with the lasso shape read back from the chart in data coordinates).

Figures are printed (run with -s to see them), never asserted: the machine decides them.
"""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest
from e2e_support import ARGS, ARTIFACTS, CHROMIUM, idle, no_error

# Minutes of software-WebGL drawing on a 2-core machine: a measurement, run by `make e2e-scale`
# (CLUSTERUCB_SCALE_E2E=1), not part of `make test`.
pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(not os.environ.get("CLUSTERUCB_SCALE_E2E"),
                                 reason="map-at-scale timing: run `make e2e-scale`")]

SIZES = (100_000, 1_000_000)
K = 12


def build(root, n: int) -> str:
    from clusterucb_core.clustering.clusterset import save_clusters
    from clusterucb_core.clustering.kmeans import KMeansResult
    from clusterucb_core.workspace import Workspace

    name = f"map{n // 1000}k"
    ws = Workspace.open(root / name)
    rng = np.random.default_rng(n)
    labels = rng.integers(0, K, size=n)
    centres = rng.normal(scale=6, size=(K, 2))
    xy = centres[labels] + rng.normal(size=(n, 2))
    cent = rng.normal(size=(K, 8)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    save_clusters(ws, f"k{K}", KMeansResult(labels.astype(np.int64), cent, 0.0, 1),
                  features_fingerprint="synthetic", features_name="synthetic")
    ws.maps().mkdir(parents=True, exist_ok=True)
    np.savez(ws.maps() / "synthetic.npz", xy=xy.astype(np.float32))
    ws.update_meta(clusters=f"k{K}")
    np.save(root / f"{name}.npy", xy)
    return name


def inside(xy: np.ndarray, vx, vy) -> int:
    """Brute force: the even-odd crossing count of every point, edge by edge."""
    px, py = xy[:, 0], xy[:, 1]
    odd = np.zeros(len(xy), dtype=bool)
    for j in range(len(vx)):
        ax, ay, bx, by = vx[j - 1], vy[j - 1], vx[j], vy[j]
        if ay == by:
            continue
        cross = ((ay > py) != (by > py)) & (px < ax + (py - ay) * (bx - ax) / (by - ay))
        odd ^= cross
    return int(odd.sum())


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_app):
    root = tmp_path_factory.mktemp("mapscale") / "workspaces"
    names = {n: build(root, n) for n in SIZES}
    url = start_app(root.parent, {"CLUSTERUCB_WORKSPACES": str(root)})
    return {"url": url, "root": root, "names": names}


@pytest.mark.parametrize("n", SIZES)
def test_first_paint_and_lasso_at_scale(server, n):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = server["names"][n]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=ARGS + ["--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(600_000)
        got: list[int] = []  # bytes of every websocket frame the browser receives
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: got.append(len(f))))
        t0 = time.perf_counter()
        page.goto(f"{server['url']}/clusters?ws={name}")
        chart = page.locator('[data-testid="stPlotlyChart"]').first
        chart.locator("canvas").first.wait_for()
        page.wait_for_function("() => { const g = document.querySelector('.js-plotly-plot');"
                               " return g && g._fullLayout && g.data && g.data.length > 0; }")
        paint = time.perf_counter() - t0
        idle(page, timeout=600)
        no_error(page)
        paint_bytes = sum(got)
        drawn = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullData"
                              ".reduce((s, t) => s + (t._length || 0), 0)")
        box = chart.locator(".nsewdrag").first.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        r = min(box["width"], box["height"]) * 0.3
        angles = np.linspace(0, 2 * np.pi, 9)[:-1]
        pts = [(cx + r * np.cos(a) * (1 if i % 2 else 0.6), cy + r * np.sin(a) *
                (1 if i % 2 else 0.6)) for i, a in enumerate(angles)]
        page.mouse.move(*pts[0])
        page.mouse.down()
        t1 = time.perf_counter()
        for x, y in pts[1:] + pts[:1]:
            page.mouse.move(x, y, steps=8)
        drag = time.perf_counter() - t1  # Plotly selects the drawn points on every move
        t1, before = time.perf_counter(), sum(got)
        page.mouse.up()
        label = page.get_by_text(re.compile(r"map selection \([\d,]+\)")).first
        label.wait_for()
        lasso = time.perf_counter() - t1
        idle(page, timeout=600)
        lasso_bytes = sum(got) - before
        before = sum(got)  # a click in the action panel reruns only the panel
        page.locator(".st-key-cl_pin button").first.click()
        page.get_by_text(re.compile(r"Pinned [\d,]+ rows")).first.wait_for()
        idle(page, timeout=600)
        pin_bytes = sum(got) - before
        n_sel = int(re.search(r"\(([\d,]+)\)", label.inner_text()).group(1).replace(",", ""))
        # the lasso as the chart recorded it (data coordinates): Plotly keeps the drawn shape
        path = page.evaluate("""() => { const g = document.querySelector('.js-plotly-plot');
            const sel = (g.layout.selections || []).filter(s => s.type === 'path');
            return sel.length ? sel[sel.length - 1].path : null; }""")
        page.screenshot(path=str(ARTIFACTS / f"map_scale_{n // 1000}k.png"))
        browser.close()
    xy = np.load(server["root"] / f"{name}.npy")
    assert path, "the chart kept no lasso shape"
    nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", path)]
    vx, vy = nums[0::2], nums[1::2]
    want = inside(xy, vx, vy)
    print(f"\nmap {n:,} points ({drawn:,} drawn): first paint {paint:.1f} s; lasso drawn in "
          f"{drag:.1f} s, then {n_sel:,} rows selected {lasso:.1f} s after release (brute "
          f"force over all rows: {want:,}); sent to the browser: {paint_bytes:,} bytes for "
          f"the page, {lasso_bytes:,} after the lasso, {pin_bytes:,} after a pin")
    assert drawn <= min(n, 100_000)
    assert n_sel == want, (n_sel, want)
    assert max(lasso_bytes, pin_bytes) * 10 < paint_bytes  # the points were not sent again
    if drawn < n:
        assert n_sel > want * drawn / n * 2  # far more than the drawn points inside
