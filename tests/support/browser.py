"""Debian's Chromium driven by Playwright (never a downloaded browser), and what the browser tests
measure: colour contrast on the page, and when a KV change reached the screen."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import threading
from collections.abc import Iterator
from pathlib import Path

import nats
from nats.js.errors import NotFoundError

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium() -> Iterator:
    """Yields a Playwright Browser (a fresh temporary profile, removed on close).

    Pages that must update live at the same time go in separate contexts: headless Chromium
    draws a tab that is not in front about once a second.
    """
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise AssertionError("Debian's chromium is needed for the browser tests: `make browser` installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


# Every visible text against its composited background, by WCAG 2 (4.5:1, or 3:1 for large text).
CONTRAST_AUDIT = """() => {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 1;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const rgba = (css) => {
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = "#000";
    ctx.fillStyle = css;
    ctx.fillRect(0, 0, 1, 1);
    const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
    return [r, g, b, a / 255];
  };
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);
  const backdrop = (element) => {
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      const color = rgba(style.backgroundColor);
      if (color[3] > 0) { layers.push(color); if (color[3] >= 1) break; }
    }
    return layers.reverse().reduce((below, layer) => over(layer, below), [255, 255, 255, 1]);
  };
  const svgBackdrop = (text) => {
    const node = text.closest("g");
    const rect = node && node.querySelector("rect");
    return rect ? over(rgba(getComputedStyle(rect).fill), backdrop(node.parentElement)) : backdrop(text.parentElement);
  };
  const luminance = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const ratio = (a, b) => { const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x); return (hi + 0.05) / (lo + 0.05); };
  const failures = [];
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const element = walker.currentNode.parentElement;
    if (!element || seen.has(element) || !walker.currentNode.textContent.trim()) continue;
    seen.add(element);
    if (element.closest("[aria-hidden=true], .sr-only, title, dialog:not([open]), button:disabled, style, script")) continue;
    if (!element.getClientRects().length || getComputedStyle(element).visibility === "hidden") continue;
    const style = getComputedStyle(element);
    const svg = element instanceof SVGElement;
    const background = svg ? svgBackdrop(element) : backdrop(element);
    const foreground = over(rgba(svg ? style.fill : style.color), background);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && parseInt(style.fontWeight, 10) >= 700);
    const value = ratio(foreground, background);
    if (value < (large ? 3 : 4.5)) failures.push(`${value.toFixed(2)}:1 "${walker.currentNode.textContent.trim().slice(0, 50)}"`);
  }
  return failures;
}"""


class KVClock:
    """When the NATS server stored each revision of the `tasks` bucket: a watch of our own, in a
    thread, independent of the gateway whose latency is measured."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.stored: dict[int, tuple[str, float]] = {}
        """revision -> (task id, epoch seconds the server stamped on it)"""
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)

    def __enter__(self) -> KVClock:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"the KV watch did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(10)

    async def _watch(self) -> None:
        try:
            connection = await nats.connect(self.nats_url)
            kv = await connection.jetstream().key_value("tasks")
            watcher = await kv.watchall(include_history=False)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stopping.is_set():
                try:
                    entry = await watcher.updates(timeout=0.2)
                except (TimeoutError, NotFoundError):
                    continue
                if entry is not None and entry.created is not None:
                    self.stored[entry.revision] = (entry.key, entry.created.timestamp())
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
            await connection.close()


RENDER_MARKS = """() => performance.getEntriesByName("aether:render").map((m) => ({
  at: performance.timeOrigin + m.startTime, view: m.detail.view, changes: m.detail.changes }))"""


def render_latencies(clock: KVClock, marks: list[dict], view: str, tasks: set[str], since: float | None = None) -> list[float]:
    """Per KV revision of `tasks`: ms from the server storing it to the first frame that showed it
    (or a newer revision of the same task, when the stream had folded it into that one).

    Revisions stored before `since` (epoch ms; default: the view's first frame) are left out:
    they measure the page load, not the live path.
    """
    shown: dict[str, list[tuple[int, float]]] = {}
    if since is None:
        since = min((m["at"] for m in marks if m["view"] == view), default=0.0)
    for mark in marks:
        if mark["view"] != view:
            continue
        for change in mark["changes"]:
            shown.setdefault(change["task"], []).append((change["revision"], mark["at"]))
    latencies = []
    for revision, (task, stored) in clock.stored.items():
        if task not in tasks:
            continue
        frames = [at for rev, at in shown.get(task, []) if rev >= revision]
        if frames and stored * 1000 >= since:
            latencies.append(min(frames) - stored * 1000)
    return latencies


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "samples": len(ordered),
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
    }
