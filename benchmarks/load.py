"""Load benchmark: 20 concurrent browser sessions against a real ``streamlit run dashboard/app.py``.

Run with ``python -m benchmarks.load``. It starts the dashboard as a subprocess on a free loopback port,
waits for ``/_stcore/health`` and then speaks Streamlit's own browser protocol to it — no browser, no
AppTest: every session opens the ``/_stcore/stream`` websocket (with the XSRF cookie and token the page
would send), sends ``BackMsg`` protobufs and reads ``ForwardMsg`` protobufs until ``script_finished``,
and uploads its file exactly as the page does (a ``file_urls_request`` on the websocket, then an HTTP
``PUT`` to ``/_stcore/upload_file/<session>/<file>``).

Every session gets its own picture (20 distinct images made from ``assets/`` by seeded crops, flips and
resizes) and goes through three steps; all sessions start each step together (a barrier between steps,
i.e. the worst case of 20 users clicking at the same moment):

1. open the page (the built-in sample, already explained by a warm-up session: a cache hit),
2. upload its image (the model runs once per image),
3. move the opacity slider to 0.8 (should only re-blend).

Each answer is checked: the page names the session's own file and size, its top-1 class equals what
``gradcam_core.explain`` gives for that image run alone in this process (probability within rounding),
the overlay caption shows the new opacity, and no error or exception element appears. The server is
started through a small launcher that counts ``gradcam_core.explain`` calls (one line per call in a temp
file), so the model calls of each step are counted on the server itself. Peak RSS is the server's
``VmHWM``. Everything is bounded (``DEADLINE_S``) and the server is stopped at the end.
"""

from __future__ import annotations

import asyncio
import io
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "load.md"
APP = ROOT / "dashboard" / "app.py"
ASSETS = ROOT / "assets"
SESSIONS = 20
SEED = 0
NEW_ALPHA = 0.8
DEADLINE_S = 240.0
"""Whole load phase (all sessions, all steps) must finish within this; the server is killed after."""
STEP_TIMEOUT_S = 180.0
HOST = "127.0.0.1"

LAUNCHER = """
import os, sys, threading, time
import gradcam_core
_real, _lock, _path = gradcam_core.explain, threading.Lock(), os.environ["GRADCAM_BENCH_CALLS"]
def _counted(*args, **kwargs):
    with _lock, open(_path, "a") as log:
        log.write(f"{time.time()}\\n")
    return _real(*args, **kwargs)
gradcam_core.explain = _counted
from streamlit.web.cli import main
sys.argv = ["streamlit", "run", *sys.argv[1:]]
main(prog_name="streamlit")
"""
"""Runs ``streamlit run`` with ``gradcam_core.explain`` wrapped to log one line per model call."""


# --------------------------------------------------------------------------------------------- images


def session_images(count: int = SESSIONS, seed: int = SEED) -> list[tuple[str, bytes]]:
    """``count`` distinct JPEG files built from the samples: seeded crop, optional mirror, resize."""
    from PIL import Image

    import gradcam_core as core

    rng = np.random.default_rng(seed)
    sources = sorted(p for p in ASSETS.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    pictures = {p: np.asarray(core.load_image(p)) for p in sources}
    files: list[tuple[str, bytes]] = []
    digests: set[bytes] = set()
    for number in range(count):
        source = sources[number % len(sources)]
        rgb = pictures[source]
        height, width = rgb.shape[:2]
        keep_h, keep_w = rng.uniform(0.7, 0.95, size=2)
        crop_h, crop_w = int(height * keep_h), int(width * keep_w)
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        crop = rgb[top : top + crop_h, left : left + crop_w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        side = int(rng.integers(320, 900))
        scale = side / max(crop.shape[:2])
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        picture = Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        if data in digests:
            raise AssertionError("two session images are identical")
        digests.add(data)
        files.append((f"load-{number:02d}-{source.stem}.jpg", data))
    return files


@dataclass(frozen=True)
class Expected:
    label: str
    probability: float
    size: tuple[int, int]


def expected_answers(files: list[tuple[str, bytes]]) -> list[Expected]:
    """Top-1 class of every image from ``gradcam_core.explain`` run alone, decoded as the dashboard does."""
    from PIL import Image

    import gradcam_core as core

    model = core.load_model(core.DEFAULT_MODEL)
    answers = []
    for _, data in files:
        rgb = np.asarray(core.load_image(data))
        found = core.explain(Image.fromarray(rgb), model, layer=model.default_layer, method="gradcam", top_k=5)
        answers.append(Expected(found.predictions[0].label, found.predictions[0].probability,
                                (rgb.shape[1], rgb.shape[0])))
    return answers


# --------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    calls_file: Path
    log_file: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def model_calls(self) -> list[float]:
        if not self.calls_file.exists():
            return []
        return [float(line) for line in self.calls_file.read_text().split()]

    def cpu_s(self) -> float:
        """User + system CPU seconds used by the server process so far (all threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak RSS) of the server process, in KiB."""
        values = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values


def start_server(workdir: Path, extra_args: tuple[str, ...] = ()) -> Server:
    """``streamlit run dashboard/app.py`` headless on a free loopback port; returns once healthy.

    ``extra_args`` are more ``streamlit run`` options (for diagnostics, e.g. ``--runner.postScriptGC false``).
    """
    import requests

    port = free_port()
    calls = workdir / "model-calls.txt"
    log = workdir / "server.log"
    env = dict(os.environ, GRADCAM_BENCH_CALLS=str(calls), PYTHONUNBUFFERED="1")
    command = [
        sys.executable, "-c", LAUNCHER, str(APP),
        "--server.headless", "true", "--server.address", HOST, "--server.port", str(port),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--server.runOnSave", "false", *extra_args,
    ]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(process, port, calls, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{server.base}/_stcore/health", timeout=2).text.strip() == "ok":
                return server
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop_server(server)
    raise TimeoutError("the dashboard did not become healthy within 90 s")


def stop_server(server: Server) -> None:
    """Stop the server started here (by its pid only)."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=15)


def xsrf_cookie(server: Server) -> str:
    """The ``_streamlit_xsrf`` cookie the server hands out (the page sends it back as a token)."""
    import requests

    response = requests.get(f"{server.base}/_stcore/health", timeout=10)
    cookie = response.cookies.get("_streamlit_xsrf")
    if not cookie:
        raise RuntimeError("the server set no XSRF cookie")
    return cookie


# --------------------------------------------------------------------------------------------- protocol


@dataclass
class Page:
    """What one script run sent to the browser."""

    markdown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    widget_ids: dict[str, str] = field(default_factory=dict)
    widget_options: dict[str, list[str]] = field(default_factory=dict)
    status: str = ""
    charts: int = 0


class Browser:
    """One browser tab: a websocket session speaking Streamlit's protobuf protocol."""

    def __init__(self, server: Server, cookie: str) -> None:
        self.server = server
        self.cookie = cookie
        self.ws = None
        self.session_id = ""
        self.widgets: dict[str, object] = {}  # widget id -> WidgetState, sent with every rerun

    async def __aenter__(self) -> Browser:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            f"ws://{HOST}:{self.server.port}/_stcore/stream",
            subprotocols=["streamlit", self.cookie],
            additional_headers={"Cookie": f"_streamlit_xsrf={self.cookie}", "Origin": self.server.base},
            max_size=None,
            open_timeout=30,
            ping_interval=None,
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()

    async def _send(self, back_msg) -> None:
        await self.ws.send(back_msg.SerializeToString())

    async def _receive(self):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        message = ForwardMsg()
        message.ParseFromString(await asyncio.wait_for(self.ws.recv(), STEP_TIMEOUT_S))
        return message

    async def rerun(self) -> Page:
        """Send a rerun with the current widget states; collect the page until the script finishes."""
        from streamlit.proto.Alert_pb2 import Alert
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        back = BackMsg()
        back.rerun_script.query_string = ""
        back.rerun_script.page_script_hash = ""
        for state in self.widgets.values():
            back.rerun_script.widget_states.widgets.append(state)
        await self._send(back)
        page = Page()
        while True:
            message = await self._receive()
            kind = message.WhichOneof("type")
            if kind == "new_session":
                self.session_id = message.new_session.initialize.session_id
            elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                element = message.delta.new_element
                which = element.WhichOneof("type")
                if which == "markdown":
                    page.markdown.append(element.markdown.body)
                elif which == "alert" and element.alert.format == Alert.ERROR:
                    page.errors.append(element.alert.body)
                elif which == "exception":
                    page.exceptions.append(f"{element.exception.type}: {element.exception.message}")
                elif which == "plotly_chart":
                    page.charts += 1
                elif which in ("slider", "file_uploader", "selectbox"):
                    widget = getattr(element, which)
                    page.widget_ids[widget.label] = widget.id
                    if which == "selectbox":
                        page.widget_options[widget.label] = list(widget.options)
            elif kind == "script_finished":
                page.status = ForwardMsg.ScriptFinishedStatus.Name(message.script_finished)
                return page

    async def upload(self, uploader_id: str, name: str, data: bytes) -> None:
        """Upload as the page does: ask for URLs on the websocket, PUT the file, set the widget state."""
        import requests
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.Common_pb2 import FileURLs, UploadedFileInfo
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        back = BackMsg()
        request_id = uuid.uuid4().hex
        back.file_urls_request.request_id = request_id
        back.file_urls_request.file_names.append(name)
        back.file_urls_request.session_id = self.session_id
        await self._send(back)
        while True:
            message = await self._receive()
            if message.WhichOneof("type") == "file_urls_response":
                if message.file_urls_response.response_id == request_id:
                    break
        response = message.file_urls_response
        if response.error_msg:
            raise RuntimeError(response.error_msg)
        urls = response.file_urls[0]

        def put() -> int:
            reply = requests.put(
                self.server.base + urls.upload_url,
                files={"file": (name, data, "image/jpeg")},
                headers={"X-Xsrftoken": self.cookie, "Origin": self.server.base},
                cookies={"_streamlit_xsrf": self.cookie},
                timeout=STEP_TIMEOUT_S,
            )
            return reply.status_code

        status = await asyncio.to_thread(put)
        if status != 204:
            raise RuntimeError(f"upload answered HTTP {status}")
        state = WidgetState(id=uploader_id)
        state.file_uploader_state_value.uploaded_file_info.append(
            UploadedFileInfo(
                name=name, size=len(data), file_id=urls.file_id,
                file_urls=FileURLs(file_id=urls.file_id, upload_url=urls.upload_url, delete_url=urls.delete_url),
            )
        )
        self.widgets[uploader_id] = state

    def set_slider(self, slider_id: str, value: float) -> None:
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        state = WidgetState(id=slider_id)
        state.double_array_value.data.append(value)
        self.widgets[slider_id] = state

    def set_selectbox(self, selectbox_id: str, shown_option: str) -> None:
        """Pick the option shown as ``shown_option`` (a selectbox's value travels as its formatted text)."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        self.widgets[selectbox_id] = WidgetState(id=selectbox_id, string_value=shown_option)


# --------------------------------------------------------------------------------------------- sessions

SUMMARY = re.compile(r" sees \*\*(?P<label>.+?)\*\* \((?P<percent>[\d.]+)%\)")


def page_problems(page: Page, *, name: str | None = None, expected: Expected | None = None,
                  alpha: float | None = None) -> list[str]:
    """Why this page is not the right answer (empty: correct)."""
    from dashboard.text import plain

    problems = [f"error: {e}" for e in page.errors] + [f"exception: {e}" for e in page.exceptions]
    if page.status != "FINISHED_SUCCESSFULLY":
        problems.append(f"script ended {page.status}")
    if page.charts < 2:  # the linked panels and the predictions (four separate charts before they were linked)
        problems.append(f"{page.charts} charts instead of at least 2")
    summary = next((m for m in page.markdown if SUMMARY.search(m)), None)
    if summary is None:
        return problems + ["no summary sentence"]
    found = SUMMARY.search(summary)
    if expected is not None:
        if found["label"] != plain(expected.label):
            problems.append(f"top-1 {found['label']!r}, alone {expected.label!r}")
        if abs(float(found["percent"]) - 100 * expected.probability) > 0.11:
            problems.append(f"probability {found['percent']}%, alone {100 * expected.probability:.2f}%")
    if name is not None and expected is not None:
        width, height = expected.size
        wanted = f"{plain(name)} · {width} × {height} px"
        if not any(wanted in m for m in page.markdown):
            problems.append(f"caption does not name {wanted!r}")
    if alpha is not None and not any(f"at {alpha:.0%} opacity" in m for m in page.markdown):
        problems.append(f"overlay caption does not show {alpha:.0%}")
    return problems


@dataclass
class SessionRecord:
    name: str
    latency_s: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def run_session(server: Server, cookie: str, name: str, data: bytes, expected: Expected,
                      barriers: list[asyncio.Barrier], marks: dict[int, float], record: SessionRecord) -> None:
    """Open the page, upload ``data``, move the slider; each step after the matching barrier."""

    async def together(step: int) -> None:
        if await barriers[step].wait() == 0:  # the first one released notes when the step started
            marks[step] = time.time()
            marks[10 + step] = server.cpu_s()

    async with Browser(server, cookie) as browser:
        await together(0)
        start = time.perf_counter()
        page = await browser.rerun()
        record.latency_s["open page (sample, cached)"] = time.perf_counter() - start
        record.problems += [f"open: {p}" for p in page_problems(page)]
        uploader, slider = page.widget_ids.get("Upload images"), page.widget_ids.get("Heatmap opacity")
        if not uploader or not slider:
            record.problems.append(f"widgets not found: {sorted(page.widget_ids)}")
            return

        await together(1)
        start = time.perf_counter()
        await browser.upload(uploader, name, data)
        uploaded = time.perf_counter()
        page = await browser.rerun()
        done = time.perf_counter()
        record.latency_s["upload HTTP PUT"] = uploaded - start
        record.latency_s["explain the upload (rerun)"] = done - uploaded
        record.problems += [f"upload: {p}" for p in page_problems(page, name=name, expected=expected)]

        await together(2)
        browser.set_slider(slider, NEW_ALPHA)
        start = time.perf_counter()
        page = await browser.rerun()
        record.latency_s["opacity 0.5 -> 0.8 (rerun)"] = time.perf_counter() - start
        record.problems += [f"alpha: {p}" for p in page_problems(page, name=name, expected=expected,
                                                                     alpha=NEW_ALPHA)]


async def warm_up(server: Server, cookie: str) -> tuple[float, list[str]]:
    """One session opens the page first: loads the model and explains the sample (a cold start)."""
    async with Browser(server, cookie) as browser:
        start = time.perf_counter()
        page = await browser.rerun()
        return time.perf_counter() - start, page_problems(page)


async def drive(server: Server, files: list[tuple[str, bytes]], answers: list[Expected]) -> dict[str, object]:
    cookie = await asyncio.to_thread(xsrf_cookie, server)
    cold_s, cold_problems = await warm_up(server, cookie)
    after_warm_up = server.memory_kib()
    calls_warm = len(server.model_calls())
    count = len(files)
    marks: dict[int, float] = {}
    barriers = [asyncio.Barrier(count) for _ in range(3)]
    records = [SessionRecord(name) for name, _ in files]

    async def guarded(index: int) -> None:
        try:
            await run_session(server, cookie, files[index][0], files[index][1], answers[index], barriers,
                              marks, records[index])
        except Exception as exc:  # noqa: BLE001 - reported per session; the others must not hang
            records[index].problems.append(f"{type(exc).__name__}: {exc}")
            for barrier in barriers:
                await barrier.abort()

    start, client_cpu = time.perf_counter(), time.process_time()
    await asyncio.wait_for(asyncio.gather(*(guarded(i) for i in range(count))), DEADLINE_S)
    wall_s = time.perf_counter() - start
    client_cpu = time.process_time() - client_cpu
    finished = time.time()
    calls = server.model_calls()[calls_warm:]
    step_starts = [marks.get(i, float("nan")) for i in range(3)] + [finished]
    calls_per_step = [sum(1 for t in calls if step_starts[i] <= t < step_starts[i + 1]) for i in range(3)]
    step_walls = [step_starts[i + 1] - step_starts[i] for i in range(3)]
    cpu_marks = [marks.get(10 + i, float("nan")) for i in range(3)] + [server.cpu_s()]
    step_cpu = [cpu_marks[i + 1] - cpu_marks[i] for i in range(3)]
    return {
        "cold_s": cold_s,
        "cold_problems": cold_problems,
        "rss_after_warm_up_kib": after_warm_up["VmRSS"],
        "records": records,
        "wall_s": wall_s,
        "step_walls": step_walls,
        "step_cpu": step_cpu,
        "client_cpu_s": client_cpu,
        "calls_per_step": calls_per_step,
        "calls_total": len(calls),
        "memory_kib": server.memory_kib(),
    }


# --------------------------------------------------------------------------------------------- report

STEPS = ("open page (sample, cached)", "upload HTTP PUT", "explain the upload (rerun)", "opacity 0.5 -> 0.8 (rerun)")
STEP_INDEX = {STEPS[0]: 0, STEPS[2]: 1, STEPS[3]: 2}
"""Which barrier-to-barrier step each timed request belongs to (the PUT is part of step 1)."""
DIAGNOSTIC = ("--runner.postScriptGC", "false")
"""Streamlit runs ``gc.collect(2)`` after every script run (hidden option, default true)."""


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def run_load(files: list[tuple[str, bytes]], answers: list[Expected], extra_args: tuple[str, ...] = ()) -> dict:
    """Start a server, drive every session through the three steps, stop the server."""
    with tempfile.TemporaryDirectory(prefix="gradcam-load-") as workdir:
        server = start_server(Path(workdir), extra_args)
        try:
            return asyncio.run(drive(server, files, answers))
        except BaseException:
            print(server.log_file.read_text()[-5000:], file=sys.stderr)
            raise
        finally:
            stop_server(server)


def table(result: dict[str, object], files: list[tuple[str, bytes]], diagnostic: dict[str, object] | None) -> str:
    records: list[SessionRecord] = result["records"]
    count = len(records)
    correct = [not r.problems for r in records]
    sizes = [len(d) for _, d in files]
    lines = [
        f"# Load: {count} concurrent sessions against `streamlit run dashboard/app.py`",
        "",
        f"Real server subprocess on {HOST} (default config), driven through Streamlit's own websocket protocol "
        f"and HTTP upload, no browser; {count} distinct JPEGs from `assets/` (seeded crop/mirror/resize, "
        f"{min(sizes) // 1024}-{max(sizes) // 1024} KiB); all sessions start each step together. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared by server and load generator, "
        f"Python {platform.python_version()}. Cold start before the load (one session: model load + sample "
        f"explained): {result['cold_s']:.1f} s.",
        "",
        "| Step (one request per session) | p50 s | p95 s | max s | step wall s | server CPU s | model calls |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for step in STEPS:
        values = [r.latency_s[step] for r in records if step in r.latency_s]
        if not values:
            lines.append(f"| {step} | – | – | – | | | |")
            continue
        index = STEP_INDEX.get(step)
        if index is None:
            extra = "| (in the next step) | | |"
        else:
            extra = (f"| {result['step_walls'][index]:.2f} | {result['step_cpu'][index]:.1f} | "
                     f"{result['calls_per_step'][index]} |")
        lines.append(f"| {step} | {statistics.median(values):.2f} | {_p95(values):.2f} | {max(values):.2f} {extra}")
    memory = result["memory_kib"]
    explain_wall = result["step_walls"][1]
    lines += [
        "",
        "| Summary | |",
        "|---|---|",
        f"| Concurrent sessions | {count} |",
        f"| Total wall time (3 steps, all sessions) | {result['wall_s']:.1f} s |",
        f"| Throughput, explanations of new images | {count / explain_wall:.2f} /s ({count} uploads explained in "
        f"{explain_wall:.1f} s, PUTs included) |",
        f"| Throughput, all script reruns | {3 * count / result['wall_s']:.1f} /s |",
        f"| CPU: server / load generator (this process, incl. the PUT threads) | {sum(result['step_cpu']):.1f} / "
        f"{result['client_cpu_s']:.1f} s |",
        f"| Server RSS after warm-up / at the end / peak (VmHWM) | {result['rss_after_warm_up_kib'] / 1024:.0f} / "
        f"{memory['VmRSS'] / 1024:.0f} / {memory['VmHWM'] / 1024:.0f} MiB |",
        f"| Model calls on the server during the load (ideal: {count}, one per upload) | {result['calls_total']} |",
        f"| Every session correct (own file and size shown, top-1 = `explain` alone, new opacity, no error) | "
        f"{'yes' if all(correct) else 'NO'} ({sum(correct)}/{count}) |",
    ]
    if diagnostic is not None:
        def p50(res: dict, step: str) -> str:
            return f"{statistics.median(r.latency_s[step] for r in res['records'] if step in r.latency_s):.2f}"

        ok = all(not r.problems for r in diagnostic["records"])
        lines.append(
            f"| Diagnostic, same load with `{' '.join(DIAGNOSTIC)}`: p50 open / explain / opacity, CPU | "
            f"{p50(diagnostic, STEPS[0])} / {p50(diagnostic, STEPS[2])} / {p50(diagnostic, STEPS[3])} s, "
            f"{' / '.join(f'{c:.1f}' for c in diagnostic['step_cpu'])} CPU s; wall {diagnostic['wall_s']:.1f} s; "
            f"model calls {' / '.join(map(str, diagnostic['calls_per_step']))}; correct {'yes' if ok else 'NO'} |"
        )
    lines.append("")
    if result["cold_problems"]:
        lines.append(f"Warm-up session problems: {result['cold_problems']}")
    for record in records:
        if record.problems:
            lines.append(f"- {record.name}: {'; '.join(record.problems[:5])}")
    lines.append("")
    return "\n".join(lines)


def main(sessions: int = SESSIONS, diagnostic: bool = True) -> str:
    """Run the load benchmark, write ``benchmarks/results/load.md`` and return its markdown.

    With ``diagnostic``, the same load runs again on a server started with ``--runner.postScriptGC false``
    (reported on one line; it shows what Streamlit's full garbage collection after every rerun costs).
    """
    _quiet_streamlit()
    files = session_images(sessions)
    answers = expected_answers(files)
    result = run_load(files, answers)
    compared = run_load(files, answers, DIAGNOSTIC) if diagnostic else None
    text = table(result, files, compared)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    return text


def _quiet_streamlit() -> None:
    """Streamlit warns "No runtime found" when ``dashboard`` is imported outside a server (here: ``plain``)."""
    import logging

    import streamlit.logger

    streamlit.logger.set_log_level("error")
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else SESSIONS))
