"""The server as a visitor (and an attacker) meets it: bound to this machine, no outbound call, names as text.

The server runs with the repository's own configuration (no address given on the command line) under a Python
audit hook that records every connection and name look-up it attempts outside this machine.
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser_support import chromium, free_port, needs_chromium, running_server

TIMEOUT_MS = 120_000
HOSTILE_LABELS = [
    "![x](http://10.255.255.1/pixel.png)",
    "see http://example.com/phish",
    "<img src=http://10.255.255.1/p.png>",
]
LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "0.0.0.0", "::"}

pytestmark = needs_chromium

WATCHED_SERVER = """
import sys
log = open(sys.argv[1], "a", buffering=1)
local = {locals!r}

def watch(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and str(args[1][0]) not in local:
        log.write(f"connect {{args[1]}}\\n")
    elif event == "socket.getaddrinfo" and str(args[0]) not in local:
        log.write(f"lookup {{args[0]}}\\n")

sys.addaudithook(watch)
from streamlit.web.cli import main
sys.argv = ["streamlit", "run", "dashboard/app.py", "--server.port", sys.argv[2]]
main()
"""


@pytest.fixture(scope="module")
def watched(tmp_path_factory) -> Iterator[tuple[str, int, Path]]:
    """The dashboard started with the repository's config only, its outbound attempts logged: (url, port, log)."""
    folder = tmp_path_factory.mktemp("watched")
    log, script, port = folder / "outbound.log", folder / "serve.py", free_port()
    log.touch()
    script.write_text(WATCHED_SERVER.format(locals=LOCAL_HOSTS))
    with running_server([sys.executable, str(script), str(log), str(port)], port) as url:
        yield url, port, log


@pytest.fixture(scope="module")
def browser():
    with chromium() as instance:
        yield instance


def _listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def _cross_origin_websocket(port: int) -> bytes:
    """Open the app's WebSocket as a page from another site would; the server's answer (status line)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /_stcore/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://attacker.example\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request.encode())
        return connection.recv(200).split(b"\r\n")[0]


def test_listens_on_this_machine_only_and_never_calls_out(browser, watched) -> None:
    url, port, log = watched
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, from .streamlit/config.toml
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_text("Grad-CAM heatmap", exact=True).wait_for()
    context.close()
    status = _cross_origin_websocket(port)
    assert b"101" not in status  # refused: another site cannot drive the app
    time.sleep(1)
    assert log.read_text() == ""  # no connection and no name look-up outside this machine


def test_hostile_labels_never_become_links_or_fetches(browser, watched, tmp_path) -> None:
    """A labels file written by someone else: its names are shown as text on every tab and fetch nothing."""
    import safetensors.torch
    import torch
    import torchvision

    url, _, log = watched
    torch.manual_seed(7)
    weights, labels = tmp_path / "[x](www.example.com) a@b.org.safetensors", tmp_path / "labels.txt"
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=len(HOSTILE_LABELS))
    safetensors.torch.save_file(model.state_dict(), weights)
    labels.write_text("\n".join(HOSTILE_LABELS) + "\n", encoding="utf-8")

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    foreign: list[str] = []
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)
    page.goto(url)
    page.get_by_text("Grad-CAM heatmap", exact=True).wait_for()
    page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Neural network", exact=True).click()
    page.get_by_role("option").filter(has_text="Your own model").first.click()
    page.get_by_text("Give the model file and the class names").wait_for()
    uploaders = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
    uploaders.nth(1).set_input_files(str(weights))
    uploaders.nth(2).set_input_files(str(labels))
    page.get_by_text("squeezenet1_1 ([x](www").first.wait_for()  # word joiners keep www. and @ from linking
    summary = page.locator('[data-testid="stMain"]').inner_text().replace("\u2060", "")
    assert "squeezenet1_1 ([x](www.example.com) a@b.org.safetensors) sees" in summary
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
    for tab in ("Explanation", "Compare", "How it works"):
        page.keyboard.press("Escape")  # a menu left open (the model menu reopened by a rerun) makes the page inert
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
        page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
        page.wait_for_timeout(1500)
        links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        assert [link for link in links if not link.startswith(url)] == [], tab
        images = page.eval_on_selector_all("img[src]", "els => els.map(e => e.src)")
        assert [src for src in images if not src.startswith((url, "data:", "blob:"))] == [], tab
        text = page.locator('[data-testid="stMain"]').inner_text()
        assert any(label in text for label in HOSTILE_LABELS), tab  # shown, as written
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(tmp_path / f"{tab}.png"), full_page=True)
    context.close()
    assert foreign == []
    assert log.read_text() == ""
