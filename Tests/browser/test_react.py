"""The React bindings (presence-react.js) with real React 18 in Chromium: React's UMD builds from
PyPI's dash wheel (scripts/fetch-react.py), "react" mapped by an import map, as an app without a
bundler would."""
import json
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from conftest import ROOT

VENDOR = ROOT / ".build-web"

REACT_SHIM = """const React = window.React;
export default React;
export const { createElement, useCallback, useEffect, useRef, useState, useSyncExternalStore, StrictMode } = React;
"""

APP = """<!doctype html><html><body><div id="root"></div>
<script src="/vendor/react.js"></script><script src="/vendor/react-dom.js"></script>
<script type="importmap">{"imports": {"react": "/vendor/react-shim.js"}}</script>
<script type="module">
  import { createElement as h, StrictMode } from "react";
  import { usePresence, useRoomCounts, usePresenceUsers, FacePile } from "/presence-react.js";
  window.renders = 0;
  function App({ roomId, userId }) {
    const users = usePresence(roomId, userId, { interval: 2000, name: userId.toUpperCase() });
    window.renders++;
    if (users === undefined) return h("p", { id: "loading" }, "loading");
    return h("div", null,
      h("ul", { id: "users" }, users.map((u) =>
        h("li", { key: u.userId, "data-user-id": u.userId, className: u.online ? "online" : "offline" }, u.name || u.userId))),
      h(FacePile, { users }));
  }
  const root = ReactDOM.createRoot(document.getElementById("root"));
  window.show = (roomId, userId, strict) =>
    root.render(strict ? h(StrictMode, null, h(App, { roomId, userId })) : h(App, { roomId, userId }));
  // A big room's pile from its counts, and a friends list.
  function Big({ roomId, userId }) {
    const users = usePresence(roomId, userId, { limit: 2 });
    const counts = useRoomCounts(roomId, userId, { limit: 2 });
    const friends = usePresenceUsers(["carol", "dave"]);
    return h("div", null,
      h("p", { id: "counts" }, counts ? `${counts.online}/${counts.users}` : "loading"),
      h("p", { id: "friends" }, friends ? friends.map((s) => `${s.userId}:${s.online ? "on" : "off"}`).join(",") : "loading"),
      h(FacePile, { users: users || [], counts }));
  }
  window.showBig = (roomId, userId) => root.render(h(StrictMode, null, h(Big, { roomId, userId })));
  window.unmount = () => root.unmount();
  window.ready = true;
</script></body></html>"""


def open_app(browser, server):
    if not (VENDOR / "react.js").exists():
        pytest.fail("React is missing: run scripts/fetch-react.py (scripts/test.sh does)")
    page = browser.new_context().new_page()
    # Every socket the page opens, and every session its heartbeats name.
    page.add_init_script("""(() => {
        window.socketsOpened = 0;
        window.sessionIds = new Set();
        const Native = window.WebSocket;
        window.WebSocket = class extends Native {
            constructor(...args) { super(...args); window.socketsOpened++; }
            send(data) {
                try { const m = JSON.parse(data); if (m.type === 'heartbeat') window.sessionIds.add(m.sessionId); } catch {}
                return super.send(data);
            }
        };
    })()""")
    page.route(f"{server.url}/vendor/react.js", lambda route: route.fulfill(path=str(VENDOR / "react.js")))
    page.route(f"{server.url}/vendor/react-dom.js", lambda route: route.fulfill(path=str(VENDOR / "react-dom.js")))
    page.route(f"{server.url}/vendor/react-shim.js",
               lambda route: route.fulfill(body=REACT_SHIM, content_type="text/javascript"))
    page.route(f"{server.url}/react-app.html", lambda route: route.fulfill(body=APP, content_type="text/html"))
    page.goto(f"{server.url}/react-app.html")
    page.wait_for_function("() => window.ready === true")
    return page


def metric(server, name):
    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def admin_list(server, room):
    request = urllib.request.Request(
        f"{server.url}/api/rooms/{room}/users", headers={"Authorization": "Bearer browser-admin"})
    with urllib.request.urlopen(request) as response:
        return {u["userId"]: u["online"] for u in json.loads(response.read())["users"]}


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    assert condition()


def test_two_react_apps_see_each_other_you_first(browser, server):
    first = open_app(browser, server)
    second = open_app(browser, server)
    first.evaluate("show('react-room', 'alice', false)")
    second.evaluate("show('react-room', 'bob', false)")
    expect(first.locator('#users li[data-user-id="bob"]')).to_have_class("online", timeout=5000)
    expect(second.locator('#users li[data-user-id="alice"]')).to_have_class("online", timeout=5000)
    assert first.locator("#users li").first.get_attribute("data-user-id") == "alice"
    assert second.locator("#users li").first.get_attribute("data-user-id") == "bob"
    # <FacePile> is the same face pile as the web component.
    expect(first.locator("presence-facepile").locator("button.face")).to_have_count(2)
    first.context.close()
    second.context.close()


def test_strict_mode_opens_one_socket_and_one_session(browser, server):
    page = open_app(browser, server)
    page.evaluate("show('strict-room', 'alice', true)")
    expect(page.locator('#users li[data-user-id="alice"]')).to_have_class("online", timeout=5000)
    # StrictMode ran the effects twice: still one socket and one session, ever.
    page.wait_for_timeout(500)
    assert page.evaluate("window.socketsOpened") == 1
    assert page.evaluate("window.sessionIds.size") == 1
    assert metric(server, "presence_ws_connections") == 1
    assert metric(server, "presence_sessions") == 1
    page.context.close()


def test_changing_the_room_leaves_the_old_one_and_unmounting_leaves(browser, server):
    page = open_app(browser, server)
    page.evaluate("show('room-a', 'alice', true)")
    expect(page.locator('#users li[data-user-id="alice"]')).to_have_class("online", timeout=5000)
    page.evaluate("show('room-b', 'alice', true)")
    expect(page.locator('#users li[data-user-id="alice"]')).to_have_class("online", timeout=5000)
    wait_for(lambda: admin_list(server, "room-a") == {"alice": False})
    assert admin_list(server, "room-b") == {"alice": True}
    wait_for(lambda: metric(server, "presence_ws_connections") == 1)
    page.evaluate("unmount()")
    wait_for(lambda: admin_list(server, "room-b") == {"alice": False})
    wait_for(lambda: metric(server, "presence_ws_connections") == 0)
    assert metric(server, "presence_sessions") == 0
    page.context.close()


def test_one_render_per_change(browser, server):
    page = open_app(browser, server)
    page.evaluate("show('render-room', 'alice', false)")
    expect(page.locator('#users li[data-user-id="alice"]')).to_be_visible(timeout=5000)
    before = page.evaluate("window.renders")
    for index in range(5):
        body = json.dumps({"roomId": "render-room", "userId": f"guest{index}", "sessionId": f"g{index}", "interval": 60000})
        urllib.request.urlopen(urllib.request.Request(f"{server.url}/api/heartbeat", data=body.encode(), method="POST"))
        expect(page.locator(f'#users li[data-user-id="guest{index}"]')).to_be_visible(timeout=5000)
    # Alice's own heartbeats change nothing, so they render nothing: five joins, five renders.
    page.wait_for_timeout(2500)
    assert page.evaluate("window.renders") - before == 5
    page.context.close()


def heartbeat(server, room, user):
    body = json.dumps({"roomId": room, "userId": user, "sessionId": f"{user}-s", "interval": 60000})
    urllib.request.urlopen(urllib.request.Request(
        f"{server.url}/api/heartbeat", data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"))


def test_room_counts_and_watched_users(browser, server):
    page = open_app(browser, server)
    page.evaluate("showBig('big-react', 'alice')")
    expect(page.locator("#counts")).to_have_text("1/1", timeout=5000)
    expect(page.locator("#friends")).to_have_text("carol:off,dave:off", timeout=5000)
    for index in range(6):
        heartbeat(server, "big-react", f"guest{index}")
    # The list holds two; the counts say seven, so the pile shows two faces and +5.
    expect(page.locator("#counts")).to_have_text("7/7", timeout=5000)
    pile = page.locator("presence-facepile")
    expect(pile.locator("button.more")).to_have_text("+5")
    expect(pile.locator("button.face:not(.more)")).to_have_count(2)
    heartbeat(server, "elsewhere", "carol")
    expect(page.locator("#friends")).to_have_text("carol:on,dave:off", timeout=5000)
    # StrictMode: one socket for the room, one for the watched users.
    assert page.evaluate("window.socketsOpened") == 2
    page.context.close()
