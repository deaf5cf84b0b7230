"""Page speed: what a user waits for in the dashboard, before (commit d6f779b) and after (this working tree).

Run with ``python -m benchmarks.page_speed`` (about 15-25 minutes). It checks out the *before* commit in a
separate git worktree (``/tmp/page-speed-before``, removed at the end), and for each version starts a real
``streamlit run dashboard/app.py`` from that version's directory with this venv, then drives it with the
websocket client of ``benchmarks/load.py`` (``start_server``, ``Browser``, ``xsrf_cookie``): every timing is the
wall time from sending the rerun until the server's ``script_finished`` for it, and every page is checked for
error or exception elements and for the summary sentence (the method and layer it names are kept).

Steps, in this order, on one new server per version:

1. first load on a cold server (first session: model load, built-in sample explained);
2. first load on the warm server (a new session each time; the sample's explanation is cached);
3. class change to the 2nd-ranked class of the sidebar's class menu;
4. method change Grad-CAM -> Grad-CAM++;
5. layer change to ``_blocks.15`` (not the default of any method);
6. the Trust checks tab, first visit (opened by its widget state when the tabs are a widget; when they are not,
   every tab is computed on every run and the step is reported as part of the first load);
7. Score-CAM at the method's default layer (the page's summary names the layer), one run, capped.

Steps 2-5 run three times (steps 3-5 on three different built-in samples, a new session each, so every
repetition computes a new map rather than hitting the server-wide cache) and the median is reported; steps 1, 6
and 7 run once. Then, on a new server, the 20-session load of ``benchmarks/load.py`` (``run_load``) runs against
the same version. Before each server starts, the script waits (up to 10 minutes) until the 1-minute load
average is below 0.6 and writes it in the results; before each timed rerun it waits (up to 2 minutes) until the
machine is idle over 2 s, and it records the CPU time other processes used during each run (``/proc/stat``
minus the server and this process), flagging runs that shared the CPUs.
Results: ``benchmarks/results/page_speed.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import load
from .load import Browser, Page, Server, start_server, stop_server, xsrf_cookie
from .report import ROOT, markdown_table

BEFORE_COMMIT = "d6f779b"
WORKTREE = Path("/tmp/page-speed-before")
RESULTS = ROOT / "benchmarks" / "results" / "page_speed.md"
CAP_S = 420.0
"""Longest any one timed step may take; a step still running then is reported as "> cap"."""
QUIET_LOAD = 0.6
QUIET_WAIT_S = 600.0
IDLE_CORES = 0.25
"""Before every timed rerun, wait (at most ``IDLE_WAIT_S``) until the whole machine used fewer cores than this
over ``IDLE_WINDOW_S`` (the server is idle between steps, so it is other processes)."""
IDLE_WAIT_S = 120.0
IDLE_WINDOW_S = 2.0
CONTENDED_SHARE = 0.1
"""A run is flagged (†) when other processes used more than this share of the 2 cores during it (and 0.3 s)."""
REPEATS = 3
REPEAT_SAMPLES = ("Cat", "Coffee cup", "Astronaut")
"""Built-in samples (as the sample menu shows them) of the three repetitions of steps 3-5."""
OTHER_LAYER = "_blocks.15"
SUMMARY = re.compile(r" sees \*\*(?P<label>.+?)\*\* \(")
MADE_WITH = re.compile(r"— (?P<method>[^—]+?), layer `?(?P<layer>[\w.]+?)`?\.\s*$")
ESCAPED = re.compile(r"\\(.)")
WORD_JOINER = "\u2060"

LAUNCHER = """
import importlib.machinery, os, sys, threading, time
_lock, _path = threading.Lock(), os.environ["GRADCAM_BENCH_CALLS"]
def _count(module):
    real = module.explain
    def counted(*args, **kwargs):
        with _lock, open(_path, "a") as log:
            log.write(f"{time.time()}\\n")
        return real(*args, **kwargs)
    module.explain = counted
class _WhenImported:
    def find_spec(self, name, path=None, target=None):
        if name != "gradcam_core":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            _count(module)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, _WhenImported())
from streamlit.web.cli import main
sys.argv = ["streamlit", "run", *sys.argv[1:]]
main(prog_name="streamlit")
"""
"""``load.LAUNCHER`` (``streamlit run`` counting ``gradcam_core.explain`` calls), but the engine and torch are
imported when the app first imports them, as with a plain ``streamlit run``: their import is part of the cold
first load, not of the server's start."""

COLD, WARM, CLASS, METHOD, LAYER, TRUST, SCORECAM = (
    "1. First load, cold server",
    "2. First load, warm server",
    "3. Class change (2nd-ranked class)",
    "4. Method change (Grad-CAM → Grad-CAM++)",
    f"5. Layer change (→ `{OTHER_LAYER}`)",
    "6. Trust checks tab, first visit",
    "7. Score-CAM at its default layer",
)
STEPS = (COLD, WARM, CLASS, METHOD, LAYER, TRUST, SCORECAM)
LOAD_STEPS = {
    "open page (sample, cached)": "8a. 20 sessions: open page",
    "explain the upload (rerun)": "8b. 20 sessions: explain an upload",
    "opacity 0.5 -> 0.8 (rerun)": "8c. 20 sessions: opacity change",
}


# --------------------------------------------------------------------------------------------- records


@dataclass
class Step:
    """One step's timings (seconds, ``None`` for a run stopped at the cap) and what its pages showed."""

    seconds: list[float | None] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)
    idle_wait: list[float] = field(default_factory=list)
    contended: list[bool] = field(default_factory=list)
    included_in_first_load: bool = False
    not_run: str = ""

    @property
    def capped(self) -> bool:
        return any(value is None for value in self.seconds)

    def median(self) -> float | None:
        """Median of the finished runs (``None`` when a run hit the cap or none ran)."""
        if not self.seconds or self.capped:
            return None
        return statistics.median(value for value in self.seconds if value is not None)


@dataclass
class VersionRun:
    """Everything measured on one version of the dashboard."""

    name: str
    root: Path
    description: str
    loads: list[str] = field(default_factory=list)
    steps: dict[str, Step] = field(default_factory=lambda: {name: Step() for name in STEPS})
    other_cpu: str = ""
    load_result: dict | None = None
    load_error: str = ""


class StepCapped(Exception):
    """A timed rerun did not finish within the cap (the server may still be computing)."""


# --------------------------------------------------------------------------------------------- machine


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def wait_until_quiet(limit: float = QUIET_LOAD, patience_s: float = QUIET_WAIT_S) -> str:
    """Poll ``/proc/loadavg`` until the 1-minute load is below ``limit`` (at most ``patience_s``); describe it."""
    start = time.monotonic()
    while True:
        one, five, fifteen = load_average()
        waited = time.monotonic() - start
        if one < limit:
            return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (waited {waited:.0f} s)"
        if waited > patience_s:
            return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (NOT quiet: still above {limit} after {waited:.0f} s)"
        time.sleep(5)


async def wait_until_idle(patience_s: float = IDLE_WAIT_S) -> float:
    """Wait until the machine used fewer than ``IDLE_CORES`` cores over ``IDLE_WINDOW_S``; the seconds waited."""
    start = time.monotonic()
    while True:
        busy = busy_cpu_s()
        await asyncio.sleep(IDLE_WINDOW_S)
        waited = time.monotonic() - start
        if (busy_cpu_s() - busy) / IDLE_WINDOW_S < IDLE_CORES or waited > patience_s:
            return waited


def busy_cpu_s() -> float:
    """CPU seconds all processes of the machine have used since boot (user, nice, system, irq, steal)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------- versions


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def make_worktree() -> Path:
    """The before commit checked out in ``WORKTREE`` (a fresh worktree; a stale one is replaced)."""
    if WORKTREE.exists():
        remove_worktree()
    git("worktree", "add", "--detach", str(WORKTREE), BEFORE_COMMIT)
    return WORKTREE


def remove_worktree() -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(WORKTREE)], check=False,
                   capture_output=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False, capture_output=True)


def after_description() -> str:
    head = git("rev-parse", "--short", "HEAD").strip()
    changed = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    return f"working tree: HEAD {head} + {len(changed)} uncommitted file(s)"


def precompile(root: Path) -> None:
    """Byte-compile ``root``'s code and import its engine once (untimed), so that neither version's first load
    pays for writing ``.pyc`` files or for reading torch from a cold disk cache."""
    python = sys.executable
    subprocess.run([python, "-m", "compileall", "-q", "dashboard", "gradcam_core"], cwd=root, check=False,
                   capture_output=True)
    subprocess.run([python, "-c", "import gradcam_core, streamlit"], cwd=root, check=False, capture_output=True)


@contextmanager
def served_from(root: Path, step_timeout_s: float, launcher: str | None = None,
                browser: type[Browser] | None = None) -> Iterator[None]:
    """Point ``benchmarks.load``'s server at ``root`` (its app and working directory) for the duration; with
    ``launcher``, start it through that script instead of ``load.LAUNCHER``; with ``browser``, ``load``'s sessions
    use that class."""
    saved = load.ROOT, load.APP, load.STEP_TIMEOUT_S, load.LAUNCHER, load.Browser
    load.ROOT, load.APP, load.STEP_TIMEOUT_S = root, root / "dashboard" / "app.py", step_timeout_s
    load.LAUNCHER, load.Browser = launcher or load.LAUNCHER, browser or load.Browser
    try:
        yield
    finally:
        load.ROOT, load.APP, load.STEP_TIMEOUT_S, load.LAUNCHER, load.Browser = saved


# --------------------------------------------------------------------------------------------- browser


class PageBrowser(Browser):
    """``load.Browser`` that also notes the tabs widget, info/warning alerts and selectbox values of a run.

    A run that ends early for a rerun (``FINISHED_EARLY_FOR_RERUN``) is followed to the end of the next one.
    """

    def __init__(self, server: Server, cookie: str) -> None:
        super().__init__(server, cookie)
        self.tabs_id: str | None = None
        self.alerts: list[str] = []
        self.headings: list[str] = []
        self.values: dict[str, str] = {}
        self._listen_only = False

    async def _send(self, back_msg) -> None:
        if not self._listen_only:
            await super()._send(back_msg)

    async def _receive(self):
        message = await super()._receive()
        if message.WhichOneof("type") == "delta":
            self._note(message.delta)
        return message

    def _note(self, delta) -> None:
        from streamlit.proto.Alert_pb2 import Alert

        kind = delta.WhichOneof("type")
        if kind == "add_block" and delta.add_block.WhichOneof("type") == "tab_container":
            self.tabs_id = delta.add_block.tab_container.id or None
        elif kind == "new_element":
            element = delta.new_element
            which = element.WhichOneof("type")
            if which == "alert" and element.alert.format in (Alert.INFO, Alert.WARNING):
                self.alerts.append(element.alert.body)
            elif which == "heading":
                self.headings.append(element.heading.body)
            elif which == "selectbox":
                box = element.selectbox
                if box.set_value and box.raw_value:
                    self.values[box.label] = box.raw_value
                elif box.HasField("default") and box.options:
                    self.values[box.label] = box.options[box.default]

    async def rerun(self) -> Page:
        self.tabs_id, self.alerts, self.headings = None, [], []
        page = await super().rerun()
        while page.status == "FINISHED_EARLY_FOR_RERUN":
            self._listen_only, self.alerts, self.headings = True, [], []
            try:
                page = await super().rerun()
            finally:
                self._listen_only = False
        return page

    def set_tab(self, label: str) -> None:
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        if self.tabs_id is None:
            raise RuntimeError("the tabs are not a widget on this page")
        self.widgets[self.tabs_id] = WidgetState(id=self.tabs_id, string_value=label)


async def timed(browser: PageBrowser, cap_s: float = CAP_S) -> tuple[float, Page]:
    """Seconds from sending a rerun to its ``script_finished``, and the page; ``StepCapped`` past ``cap_s``."""
    start = time.perf_counter()
    try:
        page = await asyncio.wait_for(browser.rerun(), cap_s)
    except TimeoutError:
        raise StepCapped(f"no script_finished within {cap_s:.0f} s") from None
    return time.perf_counter() - start, page


# --------------------------------------------------------------------------------------------- pages


def unescaped(markdown: str) -> str:
    return ESCAPED.sub(r"\1", markdown).replace(WORD_JOINER, "")


def made_with(page: Page) -> str:
    """"top class: method @ layer" as the page's summary sentence names them ("?" when absent)."""
    summary = next((m for m in page.markdown if SUMMARY.search(m)), None)
    if summary is None:
        return "?"
    text = unescaped(summary)
    top, found = SUMMARY.search(text)["label"].split(",")[0], MADE_WITH.search(text)
    return f"{top}: {found['method'].strip()} @ {found['layer']}" if found else f"{top}: ?"


def problems(page: Page, browser: PageBrowser) -> list[str]:
    """Why this page is not a finished explanation (empty: fine); an empty map counts as a problem."""
    found = [f"error: {e[:160]}" for e in page.errors] + [f"exception: {e[:160]}" for e in page.exceptions]
    if page.status != "FINISHED_SUCCESSFULLY":
        found.append(f"script ended {page.status}")
    if not any(SUMMARY.search(m) for m in page.markdown):
        found.append("no summary sentence")
    found += [f"note: {unescaped(a)[:120]}" for a in browser.alerts if "map is empty" in a]
    return found


def option(page: Page, label: str, pattern: str) -> str:
    """The shown option of the menu ``label`` matching the regex ``pattern``."""
    options = page.widget_options.get(label, [])
    matches = [o for o in options if re.search(pattern, o)]
    if not matches:
        raise LookupError(f"no option /{pattern}/ in {label!r}: {options[:6]}")
    return matches[0]


def menu_label(page: Page, part: str) -> str:
    """The full label of the menu whose label contains ``part``."""
    found = [label for label in page.widget_ids if part in label]
    if not found:
        raise LookupError(f"no menu {part!r} on the page: {sorted(page.widget_ids)}")
    return found[0]


async def record(step: Step, browser: PageBrowser) -> Page:
    """Time one rerun into ``step`` once the machine is idle (its problems, model calls, method/layer shown, and
    the CPU time other processes used meanwhile, too)."""
    server = browser.server
    step.idle_wait.append(await wait_until_idle())
    calls, busy, mine, served = len(server.model_calls()), busy_cpu_s(), time.process_time(), server.cpu_s()
    start = time.perf_counter()
    try:
        seconds, page = await timed(browser)
    except StepCapped:
        step.seconds.append(None)
        raise
    finally:
        other = busy_cpu_s() - busy - (time.process_time() - mine) - (server.cpu_s() - served)
        step.other_cpu.append(max(other, 0.0))
        wall = time.perf_counter() - start
        step.contended.append(other > max(0.3, CONTENDED_SHARE * 2 * wall))
    step.seconds.append(seconds)
    step.calls.append(len(server.model_calls()) - calls)
    step.problems += problems(page, browser)
    step.shown.append(made_with(page))
    return page


# --------------------------------------------------------------------------------------------- steps


async def first_loads(server: Server, cookie: str, steps: dict[str, Step]) -> bool:
    """Steps 1 and 2; whether the tabs are a widget (only the open tab computed)."""
    async with PageBrowser(server, cookie) as browser:
        await record(steps[COLD], browser)
        stateful_tabs = browser.tabs_id is not None
    for _ in range(REPEATS):
        async with PageBrowser(server, cookie) as browser:
            await record(steps[WARM], browser)
    return stateful_tabs


async def control_changes(server: Server, cookie: str, steps: dict[str, Step]) -> None:
    """Steps 3-5, once per sample of ``REPEAT_SAMPLES``, each in a new session."""
    for sample in REPEAT_SAMPLES:
        async with PageBrowser(server, cookie) as browser:
            page = await browser.rerun()
            sample_menu = menu_label(page, "built-in sample")
            if browser.values.get(sample_menu) != sample:
                browser.set_selectbox(page.widget_ids[sample_menu], option(page, sample_menu, f"^{re.escape(sample)}$"))
                page = await browser.rerun()  # untimed: this sample's top class explained
            classes = page.widget_options["Class"]
            browser.set_selectbox(page.widget_ids["Class"], classes[1])
            page = await record(steps[CLASS], browser)
            browser.set_selectbox(page.widget_ids["Method"], option(page, "Method", r"^Grad-CAM\+\+$"))
            page = await record(steps[METHOD], browser)
            browser.set_selectbox(page.widget_ids["Layer"], option(page, "Layer", rf"(?<![\w.]){re.escape(OTHER_LAYER)}(?![\w.])"))
            await record(steps[LAYER], browser)


async def trust_visit(server: Server, cookie: str, step: Step) -> None:
    """Step 6: a new session on the cached sample opens the Trust checks tab."""
    async with PageBrowser(server, cookie) as browser:
        await browser.rerun()
        browser.set_tab("Trust checks")
        await record(step, browser)
        for check in ("Faithfulness", "Sanity check"):
            if not any(heading.startswith(check) for heading in browser.headings):
                step.problems.append(f"no {check} section on the page")


async def scorecam(server: Server, cookie: str, step: Step) -> None:
    """Step 7: a new session on the sample switches the method to Score-CAM and leaves the layer alone."""
    async with PageBrowser(server, cookie) as browser:
        page = await browser.rerun()
        browser.set_selectbox(page.widget_ids["Method"], option(page, "Method", r"^Score-CAM\b"))
        await record(step, browser)


async def measure_steps(server: Server, steps: dict[str, Step]) -> None:
    """Steps 1-7 on ``server`` (new, cold); stops at the first step that hits the cap."""
    cookie = await asyncio.to_thread(xsrf_cookie, server)
    stateful_tabs = await first_loads(server, cookie, steps)
    await control_changes(server, cookie, steps)
    if stateful_tabs:
        await trust_visit(server, cookie, steps[TRUST])
    else:
        steps[TRUST].included_in_first_load = True
    await scorecam(server, cookie, steps[SCORECAM])


def run_steps(run: VersionRun) -> None:
    """Start a cold server for ``run``'s version, time steps 1-7, stop it."""
    precompile(run.root)
    run.loads.append(f"steps 1-7: {wait_until_quiet()}")
    with tempfile.TemporaryDirectory(prefix="page-speed-") as workdir, served_from(run.root, CAP_S + 60, LAUNCHER):
        server = start_server(Path(workdir))
        busy, mine, served = busy_cpu_s(), time.process_time(), server.cpu_s()
        started = time.perf_counter()
        try:
            asyncio.run(measure_steps(server, run.steps))
        except StepCapped:
            pass  # the capped step is recorded; the server is still busy, so later steps are skipped
        except Exception as exc:  # noqa: BLE001 - reported in the results; the other version still runs
            step = next((s for s in run.steps.values() if not s.seconds), run.steps[SCORECAM])
            step.problems.append(f"{type(exc).__name__}: {exc}")
            print(server.log_file.read_text()[-3000:], file=sys.stderr)
        finally:
            wall = time.perf_counter() - started
            other = busy_cpu_s() - busy - (time.process_time() - mine) - (server.cpu_s() - served)
            stop_server(server)
        run.other_cpu = f"{max(other, 0.0):.1f} CPU s of {2 * wall:.0f} available during steps 1-7 ({wall:.0f} s)"
        run.loads[-1] += f"; at the end {'/'.join(f'{v:.2f}' for v in load_average())}"
    for step in run.steps.values():
        if not step.seconds and not step.included_in_first_load and not step.problems:
            step.not_run = "not run (a step before it hit the cap)"


def run_load_bench(run: VersionRun, files: list[tuple[str, bytes]], answers: list) -> None:
    """Step 8: ``benchmarks.load.run_load`` against ``run``'s version (its own new server)."""
    run.loads.append(f"step 8: {wait_until_quiet()}")
    with served_from(run.root, load.STEP_TIMEOUT_S, browser=Browser):
        try:
            run.load_result = load.run_load(files, answers)
        except Exception as exc:  # noqa: BLE001 - reported in the results
            run.load_error = f"{type(exc).__name__}: {exc}"


def run_version(run: VersionRun, files: list[tuple[str, bytes]], answers: list, with_load: bool) -> None:
    print(f"[page_speed] {run.name}: {run.description}", file=sys.stderr, flush=True)
    run_steps(run)
    if with_load:
        run_load_bench(run, files, answers)


# --------------------------------------------------------------------------------------------- report


def seconds_cell(step: Step) -> str:
    if step.included_in_first_load:
        return "included in first load"
    if step.not_run:
        return "not run"
    if step.capped:
        return f"> {CAP_S:.0f} (cap){' †' if any(step.contended) else ''}"
    value = step.median()
    if value is None:
        return "failed"
    spread = ""
    finished = [s for s in step.seconds if s is not None]
    if len(finished) > 1:
        spread = f" ({min(finished):.2f}–{max(finished):.2f})"
    mark = " †" if any(step.contended) else ""
    return f"{value:.2f}{spread}{mark}"


def ratio_cell(before: float | None, after: float | None, before_capped: bool = False) -> str:
    if after is None or after <= 0:
        return "–"
    if before_capped:
        return f"> {CAP_S / after:.0f}x"
    if before is None:
        return "–"
    return f"{before / after:.1f}x"


def load_values(run: VersionRun, step: str) -> list[float]:
    if run.load_result is None:
        return []
    return [r.latency_s[step] for r in run.load_result["records"] if step in r.latency_s]


def load_rows(before: VersionRun, after: VersionRun) -> list[list[str]]:
    rows = []
    for step, title in LOAD_STEPS.items():
        for name, pick in (("p50", statistics.median), ("p95", load._p95)):
            values = [load_values(run, step) for run in (before, after)]
            numbers = [pick(v) if v else None for v in values]
            cells = [f"{n:.2f}" if n is not None else "failed" for n in numbers]
            rows.append([f"{title}, {name}", *cells, ratio_cell(*numbers)])
    return rows


def step_rows(before: VersionRun, after: VersionRun) -> list[list[str]]:
    rows = []
    for name in STEPS:
        old, new = before.steps[name], after.steps[name]
        ratio = ratio_cell(old.median(), new.median(), old.capped)
        if old.included_in_first_load or new.included_in_first_load:
            ratio = "–"
        rows.append([name, seconds_cell(old), seconds_cell(new), ratio])
    return rows


def notes(run: VersionRun) -> list[str]:
    lines = [f"- **{run.name}** ({run.description}). Load average (1/5/15 min) when each server started: "
             f"{'; '.join(run.loads)}. Other processes used {run.other_cpu}."]
    for name, step in run.steps.items():
        shown = sorted(set(step.shown))
        parts = []
        if shown:
            parts.append("page showed " + ", ".join(f"`{s}`" for s in shown))
        if step.calls:
            parts.append(f"`explain` calls per run {'/'.join(map(str, step.calls))}")
        if step.other_cpu:
            parts.append("other processes' CPU during each run " + "/".join(f"{c:.1f}" for c in step.other_cpu)
                         + " s" + (", waited " + "/".join(f"{w:.0f}" for w in step.idle_wait) + " s for an idle "
                                   "machine" if max(step.idle_wait) > 2 * IDLE_WINDOW_S + 1 else ""))
        if step.problems:
            parts.append("problems: " + "; ".join(dict.fromkeys(step.problems)))
        if parts:
            lines.append(f"  - {name}: {'; '.join(parts)}")
    if run.load_error:
        lines.append(f"  - 8. 20-session load failed: {run.load_error}")
    elif run.load_result is not None:
        records = run.load_result["records"]
        wrong = [r for r in records if r.problems]
        lines.append(
            f"  - 8. 20-session load: cold start {run.load_result['cold_s']:.1f} s, model calls per step "
            f"{' / '.join(map(str, run.load_result['calls_per_step']))}, every session correct: "
            f"{len(records) - len(wrong)}/{len(records)}"
            + (f" (`load.py`'s checks on {wrong[0].name}: {'; '.join(wrong[0].problems[:3])})" if wrong else "")
        )
    return lines


def report(before: VersionRun, after: VersionRun) -> str:
    header = [
        f"# Page speed: what a user waits for, before (`{BEFORE_COMMIT}`) and after (the working tree)",
        "",
        f"`python -m benchmarks.page_speed`. Machine: {os.cpu_count()} cores, no GPU; server and client share them. "
        "Each version is served by `streamlit run dashboard/app.py` from its own directory (the before commit in a "
        "temporary git worktree) with the same venv, and driven through Streamlit's websocket protocol "
        "(`benchmarks/load.py`'s client, no browser). A time is the wall time from sending the rerun to the "
        "server's `script_finished` for it; every page is checked for error and exception elements.",
        "",
        "Steps, on one new server per version, in this order: (1) the first session on a cold server: torch and "
        "the engine imported by the app's first run (as with a plain `streamlit run`), model load, built-in sample "
        "(Cat) explained; (2) a new session on the warm server (3 sessions); (3) the sidebar "
        "class menu set to its 2nd-ranked class; (4) the method menu Grad-CAM → Grad-CAM++; (5) the layer menu "
        f"set to `{OTHER_LAYER}`; steps 3-5 once on each of the samples Cat, Coffee cup and Astronaut, a new "
        "session each (so each repetition computes a new map); (6) the Trust checks tab opened once (faithfulness "
        "curves and sanity check); (7) the method set to Score-CAM, layer untouched (the method's default at "
        f"that version), capped at {CAP_S:.0f} s; (8) `benchmarks/load.py`'s 20 concurrent sessions (open page, "
        "upload an image and have it explained, move the opacity slider), on a new server. Steps 2-5: median of "
        "3 (min–max in brackets); 1, 6, 7: one run. Ratio: before / after (above 1: the current code is faster). "
        f"Each server starts once the 1-minute load average is below {QUIET_LOAD}, and each timed rerun once the "
        f"machine used under {IDLE_CORES} cores over {IDLE_WINDOW_S:.0f} s; † marks a step during which other "
        f"processes still used more than {CONTENDED_SHARE:.0%} of the CPUs (see the notes).",
        "",
    ]
    rows = step_rows(before, after) + load_rows(before, after)
    body = [markdown_table(["Step", "before s", "after s", "ratio"], rows), "", "Notes:", ""]
    trust_note = []
    if not before.steps[TRUST].included_in_first_load:
        trust_note = [
            f"- At `{BEFORE_COMMIT}` the tabs were already `st.tabs(..., key=\"view\", on_change=\"rerun\")` with "
            "only the open tab computed (since commit ea49013), so the Trust checks tab is timed as a first "
            "visit in both versions, not as part of the first load."
        ]
    return "\n".join(header + body + trust_note + notes(before) + notes(after)) + "\n"


# --------------------------------------------------------------------------------------------- main


def import_checker() -> None:
    """Import what ``load.page_problems`` imports (``dashboard.text``) now, together with ``gradcam_core``: the
    working tree may change during the run, and a later import could pair new dashboard code with the engine
    this process loaded at the start."""
    try:
        import dashboard.text  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - step 8's checks will report it
        print(f"[page_speed] cannot import dashboard.text now: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> str:
    """Measure both versions, write ``benchmarks/results/page_speed.md`` and return its markdown."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.page_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--no-load", action="store_true", help="skip step 8 (the 20-session load)")
    parser.add_argument("--keep-worktree", action="store_true", help=f"leave {WORKTREE} in place at the end")
    options = parser.parse_args(argv)
    load._quiet_streamlit()
    import_checker()
    files = load.session_images() if not options.no_load else []
    answers = load.expected_answers(files) if files else []
    root = make_worktree()
    try:
        before = VersionRun("before", root, f"commit {git('rev-parse', '--short', BEFORE_COMMIT).strip()}")
        run_version(before, files, answers, not options.no_load)
        after = VersionRun("after", ROOT, after_description())
        run_version(after, files, answers, not options.no_load)
    finally:
        if not options.keep_worktree:
            remove_worktree()
    text = report(before, after)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    print(main())
