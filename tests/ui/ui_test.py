#!/usr/bin/env python3
"""The dashboard in a real browser: starts a kernel, launches three agent
processes that call the LLM (a fourth agent calls it over HTTP), opens /ui
in headless Chromium (driven over the DevTools protocol, a WebSocket spoken
here with the standard library), checks that the agents and their numbers
appear, clicks "kill" on one agent and checks that the kernel killed it and
the page shows it, opens its logs, and saves a screenshot.

Usage: tests/ui/ui_test.py AIOS_BIN [SCREENSHOT.png]   (exit 0: passed)
Needs Debian's chromium (`make ui-test` installs it)."""
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time


def fail(msg):
    print("ui-test FAILED: " + msg)
    sys.exit(1)


class WS:
    """A minimal RFC 6455 client: text frames, client masking, no extensions."""

    def __init__(self, url):
        assert url.startswith("ws://")
        hostport, path = url[5:].split("/", 1)
        host, port = hostport.split(":")
        self.s = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, hostport, key)).encode())
        resp = b""
        while b"\r\n\r\n" not in resp:
            resp += self.s.recv(1)
        if b" 101 " not in resp.split(b"\r\n")[0]:
            raise RuntimeError("websocket handshake failed: %r" % resp[:200])
        self.buf = b""
        self.next_id = 0

    def _recv(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise RuntimeError("the browser closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, obj):
        data = json.dumps(obj).encode()
        hdr = bytes([0x81])
        n = len(data)
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        msg = b""
        while True:
            b0, b1 = self._recv(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv(8))[0]
            payload = self._recv(n)
            op = b0 & 0x0F
            if op in (0x1, 0x0):
                msg += payload
                if b0 & 0x80:
                    return json.loads(msg)
            # ping/pong/close: ignore

    def call(self, method, **params):
        self.next_id += 1
        me = self.next_id
        self.send({"id": me, "method": method, "params": params})
        while True:
            m = self.recv()
            if m.get("id") == me:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("page error in %s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")


def http_json(port, token, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Authorization": "Bearer " + token}
    if body is not None:
        h["Content-Type"] = "application/json"
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse()
    data = r.read()
    return r.status, (json.loads(data) if data else None)


def wait_for(what, fn, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = fn()
        if v:
            return v
        time.sleep(0.25)
    fail("timed out waiting for " + what)


AGENT_SH = """#!/bin/sh
# calls the kernel's LLM a few times as itself, then waits to be killed
for i in 1 2 3; do
  curl -s -o /dev/null -H "Authorization: Bearer $AIOS_AGENT_TOKEN" -H 'Content-Type: application/json' \\
    "$AIOS_KERNEL_URL/v1/chat/completions" \\
    -d '{"model":"aios-tiny","max_tokens":24,"messages":[{"role":"user","content":"plan step '$i'"}]}'
done
echo "calls done, waiting"
exec sleep 300
"""


def main():
    binary = os.path.abspath(sys.argv[1])
    shot = sys.argv[2] if len(sys.argv) > 2 else None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        fail("chromium is not installed (make ui-test installs Debian's chromium)")
    d = tempfile.mkdtemp(prefix="aios-ui-")
    kernel = browser = None
    try:
        ready = os.path.join(d, "ready")
        log = open(os.path.join(d, "kernel.log"), "wb")
        kernel = subprocess.Popen([binary, "serve", "--port", "0", "--data-dir", os.path.join(d, "data"),
                                   "--ready-file", ready], stdout=log, stderr=log)
        wait_for("the kernel", lambda: os.path.exists(ready) and os.path.getsize(ready) > 0, 120)
        port = int(open(ready).read().split()[0])
        token = open(os.path.join(d, "data", "admin.token")).read().strip()

        ids = {}
        for name in ("planner", "writer", "critic"):
            pkg = os.path.join(d, "pkgs", name)
            os.makedirs(pkg)
            with open(os.path.join(pkg, "config.json"), "w") as f:
                json.dump({"name": name, "description": "ui test agent", "build": {"entry": "run.sh"}}, f)
            with open(os.path.join(pkg, "run.sh"), "w") as f:
                f.write(AGENT_SH)
            os.chmod(os.path.join(pkg, "run.sh"), 0o755)
            st, j = http_json(port, token, "POST", "/agents/submit",
                              {"agent_id": pkg, "agent_config": {"task": "work"}})
            if st != 200:
                fail("submit %s: %s %s" % (name, st, j))
            ids[name] = j.get("execution_id")
        # a fourth agent over plain HTTP
        st, _ = http_json(port, token, "POST", "/v1/chat/completions",
                          {"model": "aios-tiny", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
        if st != 200:
            fail("chat call: %d" % st)

        def all_called():
            st, j = http_json(port, token, "GET", "/ui/state")
            names = {a["name"]: a for a in j["agents"]}
            return all(n in names and names[n]["tokens"]["generated"] > 0 for n in ids) and j
        state = wait_for("the agents' LLM calls", all_called, 120)

        prof = os.path.join(d, "chrome")
        browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                    "--remote-debugging-port=0", "--user-data-dir=" + prof,
                                    "--window-size=1600,1000", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(prof, "DevToolsActivePort")
        wait_for("chromium's DevTools port", lambda: os.path.exists(port_file) and len(open(port_file).read().split()) >= 2, 60)
        dport = int(open(port_file).read().split()[0])
        c = http.client.HTTPConnection("127.0.0.1", dport, timeout=30)
        c.request("GET", "/json/list")
        pages = [p for p in json.loads(c.getresponse().read()) if p.get("type") == "page"]
        ws = WS(pages[0]["webSocketDebuggerUrl"])
        ws.call("Page.enable")
        ws.call("Page.navigate", url="http://127.0.0.1:%d/ui#token=%s" % (port, token))

        def page_rows():
            return ws.eval("!!document.body && document.body.dataset.ready === '1' && "
                           "[...document.querySelectorAll('#agents tbody tr[data-agent]')].map(r => r.dataset.agent)")
        rows = wait_for("the agents table", lambda: (lambda r: r if r and all(n in r for n in ids) else None)(page_rows()))
        print("agents shown:", rows)
        # numbers: the generated tokens the page shows match the kernel's
        for n in ids:
            shown = ws.eval("document.querySelector('#agents tr[data-agent=\"%s\"]').children[9].textContent" % n)
            want = {a["name"]: a for a in state["agents"]}[n]["tokens"]["generated"]
            if int(shown.replace(",", "")) < want:
                fail("%s: the page shows %s generated tokens, the kernel counted %d" % (n, shown, want))
        bars = ws.eval("document.querySelectorAll('#timeline rect[data-call]').length")
        if not bars or bars < 4:
            fail("the timeline shows %s calls, expected at least 4" % bars)
        # click kill on the critic
        victim = ids["critic"]
        ok = ws.eval("(() => { const b = document.querySelector('button[data-kill=\"%s\"]'); if (!b) return false; b.click(); return true; })()" % victim)
        if not ok:
            fail("no kill button for the critic (run %s)" % victim)
        wait_for("the kernel to kill the critic",
                 lambda: http_json(port, token, "GET", "/agents/%s/status" % victim)[1].get("status") not in ("running", None), 20)
        wait_for("the page to show the critic stopped",
                 lambda: ws.eval("document.querySelector('#agents tr[data-agent=\"critic\"]').children[1].textContent") != "running", 20)
        st, j = http_json(port, token, "GET", "/agents/%s/status" % ids["planner"])
        if j.get("status") != "running":
            fail("the planner should still run, it is %s" % j.get("status"))
        # logs of the planner
        ws.eval("document.querySelector('button[data-logs=\"%s\"]').click()" % ids["planner"])
        wait_for("the planner's logs", lambda: "calls done" in (ws.eval("document.getElementById('logs').textContent") or ""), 20)
        if shot:
            time.sleep(1.5)  # a second poll fills the queue chart and the rate
            png = ws.call("Page.captureScreenshot", format="png")["data"]
            with open(shot, "wb") as f:
                f.write(base64.b64decode(png))
            print("screenshot:", shot)
        print("ui-test passed: %d agents shown, %d timeline bars, kill and logs work" % (len(rows), bars))
    finally:
        if browser:
            browser.kill()
            browser.wait()
        if kernel:
            kernel.send_signal(signal.SIGTERM)
            try:
                kernel.wait(30)
            except subprocess.TimeoutExpired:
                kernel.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
