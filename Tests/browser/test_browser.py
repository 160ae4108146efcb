"""The browser client, the face pile and the demo page in a real Chromium."""
import json
import time
import urllib.request

from playwright.sync_api import expect

from conftest import Server, hs256_token

JOIN_BOUND_MS = 1000


def open_demo(browser, server, room, query=""):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/{query}#{room}")
    user_id = page.wait_for_function("() => window.presenceRoom && window.presenceRoom.sessionToken && sessionStorage.getItem('presence-user')").json_value()
    return page, user_id


def row(page, user_id):
    return page.locator(f'#users tr[data-user-id="{user_id}"]')


def elapsed_ms(start):
    return (time.monotonic() - start) * 1000


def test_two_pages_see_each_other_within_one_second(browser, server):
    first, first_id = open_demo(browser, server, "meet")
    start = time.monotonic()
    second, second_id = open_demo(browser, server, "meet")
    expect(row(first, second_id)).to_have_class("online", timeout=5000)
    expect(row(second, first_id)).to_have_class("online", timeout=5000)
    # Both directions within 1 s of the second page's own join.
    assert elapsed_ms(start) < JOIN_BOUND_MS + 2000  # page load included; the fan-out itself is checked below
    joined_at = time.monotonic()
    third, third_id = open_demo(browser, server, "meet")
    expect(row(first, third_id)).to_be_visible(timeout=JOIN_BOUND_MS)
    expect(row(second, third_id)).to_be_visible(timeout=JOIN_BOUND_MS)
    # The face pile shows all three, the current user first.
    faces = first.locator("presence-facepile").locator("button.face:not(.more)")
    expect(faces).to_have_count(3)
    assert faces.first.get_attribute("data-user-id") == first_id
    for page in (first, second, third):
        page.context.close()


def test_typing_shows_on_the_other_page(browser, server):
    first, first_id = open_demo(browser, server, "typing")
    second, _ = open_demo(browser, server, "typing")
    expect(row(second, first_id)).to_be_visible(timeout=5000)
    first.focus("#message")
    expect(row(second, first_id).locator("td").nth(2)).to_have_text("typing: true", timeout=JOIN_BOUND_MS)
    first.focus("#name")
    expect(row(second, first_id).locator("td").nth(2)).to_have_text("typing: false", timeout=JOIN_BOUND_MS)
    # The tooltip in the face pile carries the data too.
    tooltip = second.locator("presence-facepile").locator(f'button[data-user-id="{first_id}"] .data')
    expect(tooltip).to_have_text("typing: false")
    first.context.close()
    second.context.close()


def test_closing_a_page_shows_it_offline_within_one_second(browser, server):
    first, first_id = open_demo(browser, server, "closing")
    second, _ = open_demo(browser, server, "closing")
    expect(row(second, first_id)).to_have_class("online", timeout=5000)
    first.close()  # pagehide: sendBeacon to /api/disconnect
    expect(row(second, first_id)).to_have_class("offline", timeout=JOIN_BOUND_MS)
    expect(row(second, first_id).locator("td").nth(1)).to_have_text("Last seen just now")
    second.context.close()


def set_visibility(page, state):
    page.evaluate(
        """(state) => {
            Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
            Object.defineProperty(document, 'hidden', { configurable: true, get: () => state === 'hidden' });
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        state,
    )


def record_states(page, user_id):
    """Every state the page's list shows for `user_id` from now on: online, away or offline."""
    page.evaluate(
        """(userId) => {
            window.seenStates = [];
            presenceRoom.addEventListener('change', (event) => {
                const user = event.detail.users.find((u) => u.userId === userId);
                if (user) window.seenStates.push(user.online ? (user.away ? 'away' : 'online') : 'offline');
            });
        }""",
        user_id,
    )


def count_heartbeats(page):
    page.evaluate(
        """() => {
            window.heartbeatsSent = 0;
            const send = presenceRoom.send.bind(presenceRoom);
            presenceRoom.send = (message) => {
                if (message.type === 'heartbeat') window.heartbeatsSent++;
                return send(message);
            };
        }""")


def test_a_hidden_page_is_away_never_offline_and_back_when_shown(browser, server):
    first, first_id = open_demo(browser, server, "hidden")
    second, _ = open_demo(browser, server, "hidden")
    expect(row(second, first_id)).to_have_class("online", timeout=5000)
    record_states(second, first_id)
    set_visibility(first, "hidden")
    # Within one heartbeat interval (5 s on the demo page); it goes out at once.
    expect(row(second, first_id)).to_have_class("online away", timeout=5000)
    expect(row(second, first_id).locator("td").nth(1)).to_have_text("Away just now")
    started = time.monotonic()
    set_visibility(first, "visible")
    expect(row(second, first_id)).to_have_class("online", timeout=JOIN_BOUND_MS)
    assert elapsed_ms(started) < JOIN_BOUND_MS
    assert second.evaluate("window.seenStates") == ["away", "online"], "never offline"
    first.context.close()
    second.context.close()


def test_leave_when_hidden_shows_offline_at_once_and_rejoins(browser, server):
    first, first_id = open_demo(browser, server, "leaving", "?leaveWhenHidden=1")
    second, _ = open_demo(browser, server, "leaving")
    expect(row(second, first_id)).to_have_class("online", timeout=5000)
    set_visibility(first, "hidden")
    expect(row(second, first_id)).to_have_class("offline", timeout=JOIN_BOUND_MS)
    set_visibility(first, "visible")
    expect(row(second, first_id)).to_have_class("online", timeout=JOIN_BOUND_MS)
    first.context.close()
    second.context.close()


def test_an_idle_page_becomes_away_and_input_brings_it_back_with_one_heartbeat(browser, server):
    # Heartbeats every 30 s: whatever the other page sees within the bounds below came from the idle logic.
    first, first_id = open_demo(browser, server, "idle", "?idleAfter=1500&interval=30000")
    second, _ = open_demo(browser, server, "idle")
    expect(row(second, first_id)).to_be_visible(timeout=5000)
    # No input for idleAfter (plus the check's period): away.
    expect(row(second, first_id)).to_have_class("online away", timeout=5000)
    count_heartbeats(first)
    started = time.monotonic()
    for step in range(20):
        first.mouse.move(10 + step * 5, 10 + step * 3)
    expect(row(second, first_id)).to_have_class("online", timeout=JOIN_BOUND_MS)
    assert elapsed_ms(started) < JOIN_BOUND_MS
    assert first.evaluate("window.heartbeatsSent") == 1, "input brings one heartbeat, not a burst"
    first.context.close()
    second.context.close()


def test_pages_recover_on_their_own_after_a_server_restart(browser, server):
    first, first_id = open_demo(browser, server, "restart")
    second, second_id = open_demo(browser, server, "restart")
    expect(row(first, second_id)).to_have_class("online", timeout=5000)
    server.restart()
    expect(first.locator("#status")).to_have_text(f"connected as {first_id}", timeout=15000)
    expect(second.locator("#status")).to_have_text(f"connected as {second_id}", timeout=15000)
    # After the restart both keep seeing each other, and changes flow again.
    expect(row(first, second_id)).to_have_class("online", timeout=5000)
    second.focus("#message")
    expect(row(first, second_id).locator("td").nth(2)).to_have_text("typing: true", timeout=5000)
    first.context.close()
    second.context.close()


def test_facepile_with_seven_users(browser, server, artifacts):
    page = browser.new_page(viewport={"width": 420, "height": 260})
    page.goto(f"{server.url}/")
    page.set_content(
        """<!doctype html><body style="font: 14px sans-serif; padding: 20px">
        <presence-facepile id="pile"></presence-facepile></body>""")
    page.add_script_tag(url=f"{server.url}/presence-facepile.js", type="module")
    page.wait_for_function("() => customElements.get('presence-facepile')")
    page.evaluate(
        """() => {
            const now = Date.now();
            const names = ["Ada", "Brook", "Cyd", "Dana", "Eli", "Fox", "Gus"];
            document.getElementById('pile').users = names.map((name, i) => ({
                userId: name.toLowerCase(), name, online: i !== 3,
                onlineSince: i !== 3 ? now - i * 1000 : 0, lastDisconnected: i === 3 ? now - 5 * 60000 : 0,
                away: i === 2 || i === 5, awaySince: i === 2 || i === 5 ? now - 3 * 60000 : 0,
                data: i === 0 ? { typing: true } : undefined,
            }));
        }""")
    pile = page.locator("#pile")
    faces = pile.locator("button.face:not(.more)")
    expect(faces).to_have_count(5)
    more = pile.locator("button.more")
    expect(more).to_have_text("+2")
    assert more.get_attribute("aria-expanded") == "false"
    assert faces.nth(0).get_attribute("aria-label") == "Ada, Online now"
    assert faces.nth(3).get_attribute("aria-label") == "Dana, Last seen 5 min ago"
    assert "offline" in faces.nth(3).get_attribute("class")
    # Away: still online, dimmed with a clock badge, and how long in the tooltip.
    assert faces.nth(2).get_attribute("aria-label") == "Cyd, Away for 3 min"
    assert faces.nth(2).get_attribute("class").split() == ["face", "online", "away"]
    badge = faces.nth(2).evaluate("(face) => getComputedStyle(face, '::after').content")
    assert "🕒" in badge
    opacities = [faces.nth(i).locator(".avatar").evaluate("(a) => Number(getComputedStyle(a).opacity)") for i in (0, 2, 3)]
    assert opacities[0] == 1 and opacities[1] < 1 and opacities[2] < opacities[1], opacities
    # Keyboard: tab to the first face shows its tooltip; the "+2" opens the list of the rest.
    page.keyboard.press("Tab")
    expect(faces.nth(0).locator(".tooltip")).to_be_visible()
    expect(faces.nth(0).locator(".data")).to_have_text("typing: true")
    more.click()
    assert more.get_attribute("aria-expanded") == "true"
    expect(pile.locator(".overflow li")).to_have_count(2)
    expect(pile.locator(".overflow li").nth(0)).to_contain_text("Fox — Away for 3 min")
    more.click()
    faces.nth(0).focus()
    path = artifacts / "facepile-online-away-offline.png"
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": 420, "height": 200})
    assert path.stat().st_size > 1000
    page.close()


def test_demo_assets_have_content_types_and_cache_headers(browser, server):
    page = browser.new_page()
    for path, content_type, cache in [
        ("/", "text/html", "no-cache"),
        ("/presence.js", "text/javascript", "max-age"),
        ("/presence-facepile.js", "text/javascript", "max-age"),
    ]:
        response = page.request.get(server.url + path)
        assert response.status == 200
        assert response.headers["content-type"].startswith(content_type)
        assert cache in response.headers["cache-control"]
        etag = response.headers["etag"]
        again = page.request.get(server.url + path, headers={"If-None-Match": etag})
        assert again.status == 304
    page.close()


def test_emoji_and_status_agree_with_the_swift_client(browser, server):
    page = browser.new_page()
    page.goto(f"{server.url}/")
    result = page.evaluate(
        """async () => {
            const pile = await import('/presence-facepile.js');
            return [pile.EMOJIS.indexOf(pile.emojiFor('alice')),
                    pile.statusText({online: false, lastDisconnected: Date.now() - 2 * 3600000})];
        }""")
    # FNV-1a("alice") = 0x872213e7, 0x872213e7 % 16 = 7 (FacePileModelTests checks the same in Swift).
    assert result == [7, "Last seen 2 hours ago"]
    page.close()


def test_the_client_takes_a_token_function_when_the_server_requires_one(browser, jwt_server):
    page = browser.new_page()
    page.goto(f"{jwt_server.url}/")
    result = page.evaluate(
        """async ([good, bad]) => {
            const { PresenceRoom } = await import('/presence.js');
            const join = (userId, token) => new Promise((resolve) => {
                const room = new PresenceRoom({ roomId: 'secure', userId, token, leaveWhenHidden: false });
                room.addEventListener('change', (e) => resolve(e.detail.users.map((u) => u.name || u.userId)));
                room.addEventListener('error', (e) => resolve('error:' + e.detail.code));
                room.join();
            });
            const allowed = await join('alice', async () => good);
            const refused = await join('mallory', bad);
            return [allowed, refused];
        }""",
        [hs256_token("alice"), hs256_token("someone-else")],
    )
    assert result == [["Alice"], "error:permission_denied"]
    page.close()


def post_json(server, path, body):
    request = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def test_a_big_room_shows_its_counts_in_the_pile(browser):
    """The list holds the first three; the pile's "+N" and its label come from the room's counts."""
    server = Server("--rate-limit", "100000")
    try:
        big_room_pile(browser, server)
    finally:
        server.stop()


def big_room_pile(browser, server):
    page = browser.new_page()
    page.goto(f"{server.url}/")
    page.set_content('<!doctype html><body><presence-facepile id="pile"></presence-facepile></body>')
    page.evaluate(
        """async (url) => {
            await import(url + '/presence-facepile.js');
            const { PresenceRoom } = await import(url + '/presence.js');
            window.bigRoom = new PresenceRoom({ url, roomId: 'webinar', userId: 'viewer', limit: 3 });
            document.getElementById('pile').room = window.bigRoom;
            window.bigRoom.join();
        }""", server.url)
    page.wait_for_function("() => window.bigRoom.counts && window.bigRoom.counts.users === 1")
    sessions = [post_json(server, "/api/heartbeat", {"roomId": "webinar", "userId": f"guest{i}", "sessionId": f"g{i}", "interval": 30000})
                for i in range(1, 1205)]
    pile = page.locator("#pile")
    # 1,205 in the room, three of them shown: +1,202.
    expect(pile.locator("button.more")).to_have_text("+1,202", timeout=10000)
    expect(pile.locator("button.face:not(.more)")).to_have_count(3)
    assert pile.locator("[role=group]").get_attribute("aria-label") == "1,205 online, 1,205 in the room"
    assert page.evaluate("() => window.bigRoom.users.length") == 3
    for tokens in sessions[:4]:
        post_json(server, "/api/disconnect", {"sessionToken": tokens["sessionToken"]})
    expect(pile.locator("[role=group]")).to_have_attribute("aria-label", "1,201 online, 1,205 in the room", timeout=5000)
    page.evaluate("() => window.bigRoom.leave()")
    page.close()


def test_presence_users_follows_users_across_rooms(browser, server):
    page = browser.new_page()
    page.goto(f"{server.url}/")
    page.evaluate(
        """async (url) => {
            const { PresenceUsers } = await import(url + '/presence.js');
            window.seen = [];
            window.friends = new PresenceUsers({ url, userIds: ['alice', 'bob'], onChange: (users) => window.seen.push(users) });
            window.friends.start();
        }""", server.url)
    page.wait_for_function("() => window.friends.users.length === 2")
    assert page.evaluate("() => window.friends.users.map((u) => [u.userId, u.online])") == [["alice", False], ["bob", False]]
    alice_a = post_json(server, "/api/heartbeat", {"roomId": "a", "userId": "alice", "sessionId": "a1", "interval": 30000})
    alice_b = post_json(server, "/api/heartbeat", {"roomId": "b", "userId": "alice", "sessionId": "b1", "interval": 30000})
    page.wait_for_function("() => window.friends.users[0].online && window.friends.users[0].rooms === 2", timeout=5000)
    post_json(server, "/api/disconnect", {"sessionToken": alice_a["sessionToken"]})
    post_json(server, "/api/disconnect", {"sessionToken": alice_b["sessionToken"]})
    page.wait_for_function("() => !window.friends.users[0].online && window.friends.users[0].lastDisconnected > 0", timeout=5000)
    # Watching someone else instead sends only the difference, and the list follows the new order.
    page.evaluate("() => window.friends.setUserIds(['bob', 'carol'])")
    page.wait_for_function("() => window.friends.users.map((u) => u.userId).join() === 'bob,carol'", timeout=5000)
    post_json(server, "/api/heartbeat", {"roomId": "c", "userId": "carol", "sessionId": "c1", "interval": 30000})
    page.wait_for_function("() => window.friends.users[1].online", timeout=5000)
    page.evaluate("() => window.friends.stop()")
    page.close()


def test_presence_users_watches_again_with_a_fresh_token_when_its_token_expires(browser, jwt_server):
    """The server ends a socket's watches when its token expires (unwatched, token_expired); the
    client asks its token function for a fresh one and watches again. The server allows 30 s of
    leeway, so a token minted 28 s past its exp lives 2 s more."""
    page = browser.new_page()
    page.expose_function("freshToken", lambda: hs256_token("carol", lifetime=-28))
    page.goto(f"{jwt_server.url}/")
    page.evaluate(
        """async (url) => {
            const { PresenceUsers } = await import(url + '/presence.js');
            window.friends = new PresenceUsers({ url, userIds: ['carol'], token: () => window.freshToken() });
            window.friends.start();
        }""", jwt_server.url)
    page.wait_for_function("() => window.friends.users.length === 1 && !window.friends.users[0].online", timeout=5000)
    time.sleep(2.5)  # past the watcher's token's leeway
    request = urllib.request.Request(
        jwt_server.url + "/api/heartbeat",
        data=json.dumps({"roomId": "doc", "userId": "carol", "sessionId": "c1", "interval": 30000}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + hs256_token("carol")}, method="POST")
    urllib.request.urlopen(request, timeout=10).read()
    page.wait_for_function("() => window.friends.users[0].online", timeout=5000)
    page.evaluate("() => window.friends.stop()")
    page.close()
