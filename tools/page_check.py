#!/usr/bin/env python3
"""Loads effnet's web page in headless Chromium, uploads an image through its file input (the DevTools
protocol's DOM.setFileInputFiles, as a user picking a file), waits until the page has shown the top-5 and
the Grad-CAM overlay, and prints what the DOM then shows as JSON: the rendered top-1, the status, the
number of bars and whether the overlay image loaded. Saves a screenshot.

usage: page_check.py URL IMAGE SCREENSHOT [--chromium PATH] [--timeout S]
Needs websocket-client (scripts/fetch-assets installs it into assets/python)."""

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


class Page:
    """A DevTools protocol session with one page."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next = 0

    def call(self, method, **params):
        self.next += 1
        self.ws.send(json.dumps({"id": self.next, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


def start_browser(chromium, url, profile):
    process = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
         "--window-size=1100,760", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    for line in process.stderr:
        match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if match:
            return process, int(match.group(1))
        if time.time() > deadline:
            break
    process.kill()
    raise RuntimeError("Chromium did not start its DevTools endpoint")


def page_target(port, url):
    deadline = time.time() + 30
    while time.time() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
            for target in json.load(r):
                if target.get("type") == "page" and target.get("url", "").startswith(url):
                    return target["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise RuntimeError("the page did not open")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("image")
    parser.add_argument("screenshot")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser, port = start_browser(args.chromium, args.url, profile)
        try:
            page = Page(page_target(port, args.url))
            deadline = time.time() + args.timeout
            # The target can show the initial blank document for a moment before the page's.
            loaded = "document.readyState === 'complete' && !!document.getElementById('file')"
            while not page.evaluate(loaded):
                if time.time() > deadline:
                    raise RuntimeError("the page did not load")
                time.sleep(0.1)
            # The file input, by a handle on the live object (node ids go stale across reloads).
            handle = page.call("Runtime.evaluate", expression="document.getElementById('file')")
            page.call("DOM.setFileInputFiles", files=[os.path.abspath(args.image)],
                      objectId=handle["result"]["objectId"])
            state = None
            while time.time() < deadline:
                state = page.evaluate("document.getElementById('status').dataset.state")
                if state in ("done", "error"):
                    break
                time.sleep(0.2)
            # The overlay's pixels are decoded before the screenshot.
            page.evaluate("document.getElementById('overlay').decode().catch(() => null)")
            report = {
                "state": state,
                "status": page.evaluate("document.getElementById('status').textContent"),
                "top1": page.evaluate("document.getElementById('top1').textContent"),
                "top1_class": page.evaluate("Number(document.getElementById('top1').dataset.class)"),
                "bars": page.evaluate("document.querySelectorAll('#bars .bar').length"),
                "overlay_loaded": page.evaluate(
                    "(() => { const o = document.getElementById('overlay');"
                    " return o.style.display === 'block' && o.complete && o.naturalWidth > 0; })()"),
                "model": page.evaluate("document.getElementById('model').textContent"),
            }
            shot = page.call("Page.captureScreenshot", format="png")["data"]
            with open(args.screenshot + ".part", "wb") as out:
                out.write(base64.b64decode(shot))
            os.replace(args.screenshot + ".part", args.screenshot)
            print(json.dumps(report))
        finally:
            browser.kill()
            browser.wait()


if __name__ == "__main__":
    sys.exit(main())
