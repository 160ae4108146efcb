// presence.js — the browser client of swift-presence. No dependencies, no build step.
//
//   import { PresenceRoom } from "/presence.js";
//   const room = new PresenceRoom({ roomId: "doc-42", userId: "alice", name: "Alice" });
//   room.addEventListener("change", (event) => render(event.detail.users));
//   room.join();
//
// One WebSocket carries heartbeats, the subscription and updates (see the protocol
// reference). Heartbeats never overlap; the list is a snapshot plus diffs, resubscribed
// when a diff's `from` shows a gap; the socket reconnects with backoff and jitter.

/**
 * Unicode code point order: the server's order of user ids (and of UTF-8 bytes). JavaScript's own `<`
 * compares UTF-16 units, which puts characters above U+FFFF (emoji) before U+E000–U+FFFF.
 */
export function compareCodePoints(a, b) {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.codePointAt(i);
    const y = b.codePointAt(i);
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return Math.sign(a.length - b.length);
}

/** PROTOCOL.md's order: online first by onlineSince, then offline by lastDisconnected (newest first), then userId. */
export function compareUsers(a, b) {
  if (a.online !== b.online) return a.online ? -1 : 1;
  if (a.online && a.onlineSince !== b.onlineSince) return a.onlineSince - b.onlineSince;
  if (!a.online && a.lastDisconnected !== b.lastDisconnected) return b.lastDisconnected - a.lastDisconnected;
  return compareCodePoints(a.userId, b.userId);
}

/** The list as a user sees it: themselves first, everyone else in the protocol's order. */
export function youFirst(users, userId) {
  const mine = users.filter((u) => u.userId === userId);
  return mine.concat(users.filter((u) => u.userId !== userId));
}

/** Drops `remove`, replaces or adds `upsert`, sorts: the list a diff leads to. */
export function applyDiff(users, diff) {
  const dropped = new Set([...(diff.remove || []), ...(diff.upsert || []).map((u) => u.userId)]);
  return users.filter((u) => !dropped.has(u.userId)).concat(diff.upsert || []).sort(compareUsers);
}

/** A snapshot's or diff's counts; servers before 1.1 send none, so the list's own stand in. */
function countsOf(message, list) {
  if (message.onlineCount === undefined) return { online: list.filter((u) => u.online).length, users: list.length };
  return { online: message.onlineCount, users: message.userCount };
}

/** Input that shows someone is at the tab. */
const INPUT_EVENTS = ["pointerdown", "pointermove", "keydown", "touchstart", "wheel"];

function randomId() {
  return (crypto.randomUUID && crypto.randomUUID()) || String(Math.random()).slice(2) + String(Date.now());
}

/** The server's WebSocket address for `options.url` (default: this page's origin). */
function webSocketURL(options) {
  return (options.url || location.origin).replace(/\/$/, "").replace(/^http/, "ws") + "/api/ws";
}

/** `options.token`, a string or a function giving one (maybe asynchronously), or nothing. */
async function tokenOf(options) {
  const { token } = options;
  return typeof token === "function" ? await token() : token;
}

/**
 * `socketURL` with the current token, for opening a socket. A token that cannot be had is an
 * `error` event on `target` (`token_unavailable`), and the socket opens without one.
 */
async function authorizedSocketURL(target, socketURL, options) {
  try {
    const token = await tokenOf(options);
    if (token) return socketURL + "?access_token=" + encodeURIComponent(token);
  } catch (error) {
    target.dispatchEvent(new CustomEvent("error", { detail: { code: "token_unavailable", message: String(error) } }));
  }
  return socketURL;
}

/** How long `owner` waits before reconnecting: its backoff with jitter, which doubles up to 30 s. */
function nextReconnectDelay(owner) {
  const delay = owner.backoff * (0.5 + Math.random() / 2);
  owner.backoff = Math.min(owner.backoff * 2, 30000);
  return delay;
}

export class PresenceRoom extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.roomId
   * @param {string} options.userId
   * @param {string} [options.url] the server's base URL (default: this page's origin)
   * @param {string} [options.sessionId] one per tab (default: random, kept for this tab); it belongs to this
   *   user, so other users' ids never clash with it
   * @param {number} [options.interval] heartbeat interval in ms, 1000–300000 (default 10000)
   * @param {string} [options.name] display name
   * @param {string} [options.image] avatar URL (http: or https:)
   * @param {number} [options.limit] how many users the list holds (default 104)
   * @param {boolean} [options.leaveWhenHidden] leave (show offline) while the tab is hidden, instead of away
   *   (default false)
   * @param {number} [options.idleAfter] ms without pointer, keyboard or touch input after which a visible tab
   *   is away (default 300000; 0 never)
   * @param {number} [options.hiddenInterval] heartbeat interval in ms while the tab is hidden and away: browsers
   *   run a hidden tab's timers as seldom as once a minute (default 60000)
   * @param {string | (() => string | Promise<string>)} [options.token] a user token, or a function returning a
   *   fresh one, for servers that require user authentication
   * @param {(users: object[]) => void} [options.onChange] called with the list whenever it changes
   */
  constructor(options) {
    super();
    if (!options || !options.roomId || !options.userId) throw new Error("PresenceRoom needs roomId and userId");
    this.options = { interval: 10000, limit: 104, leaveWhenHidden: false, idleAfter: 300000, hiddenInterval: 60000, ...options };
    this.httpBase = (this.options.url || location.origin).replace(/\/$/, "");
    this.socketURL = webSocketURL(this.options);
    this.sessionId = this.options.sessionId || randomId();
    this.roomToken = null;
    this.sessionToken = null;
    this.subscribedToken = null;
    this.version = 0;
    this.list = [];
    /** The whole room's counts, whatever the limit: { online, users }; null before the first snapshot. */
    this.counts = null;
    this.socket = null;
    this.nextId = 0;
    this.pending = new Map();
    this.heartbeatInFlight = false;
    this.joined = false;
    this.hidden = false;  // left because hidden (leaveWhenHidden)
    this.tabHidden = false;
    this.idle = false;
    this.away = false;  // what the heartbeats say
    this.lastInput = Date.now();
    this.backoff = 250;
    this.timers = { heartbeat: null, reconnect: null, idle: null, hidden: null };
    this.onPageHide = () => this.beacon();
    this.onVisibility = () => this.visibilityChanged();
    this.onInput = () => this.inputSeen();
  }

  /** The list: the current user first, then the protocol's order. */
  get users() {
    return youFirst(this.list, this.options.userId);
  }

  /** Starts heartbeating and following the room. */
  join() {
    if (this.joined) return this;
    this.joined = true;
    addEventListener("pagehide", this.onPageHide);
    addEventListener("beforeunload", this.onPageHide);
    document.addEventListener("visibilitychange", this.onVisibility);
    for (const type of INPUT_EVENTS) addEventListener(type, this.onInput, { capture: true, passive: true });
    this.tabHidden = document.visibilityState === "hidden";
    if (this.options.idleAfter > 0) {
      this.timers.idle = setInterval(() => this.checkIdle(), Math.min(this.options.idleAfter / 4, 15000));
    }
    this.away = this.isAway();
    this.connect();
    this.scheduleHeartbeats();
    return this;
  }

  /** Heartbeats every `interval`, or every `hiddenInterval` while hidden and away. */
  scheduleHeartbeats() {
    clearInterval(this.timers.heartbeat);
    this.timers.heartbeat = setInterval(() => this.heartbeat(), this.currentInterval());
  }

  currentInterval() {
    const { interval, hiddenInterval } = this.options;
    return this.tabHidden && this.away ? Math.max(interval, Math.min(hiddenInterval, 300000)) : interval;
  }

  /** Sets this user's data in the room (any JSON; null clears it). Resolves when stored. */
  update(data) {
    return this.request({ type: "update", sessionToken: this.sessionToken, data: data === undefined ? null : data });
  }

  /** Changes the display name (and image); sent with the next heartbeat, which goes out now. */
  setProfile({ name, image } = {}) {
    if (name !== undefined) this.options.name = name;
    if (image !== undefined) this.options.image = image;
    this.heartbeat(true);
  }

  /** Ends the session at once and stops everything. */
  leave() {
    if (!this.joined) return;
    this.joined = false;
    clearInterval(this.timers.heartbeat);
    clearInterval(this.timers.idle);
    clearTimeout(this.timers.reconnect);
    clearTimeout(this.timers.hidden);
    removeEventListener("pagehide", this.onPageHide);
    removeEventListener("beforeunload", this.onPageHide);
    document.removeEventListener("visibilitychange", this.onVisibility);
    for (const type of INPUT_EVENTS) removeEventListener(type, this.onInput, { capture: true });
    if (this.sessionToken && this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.send({ type: "disconnect", sessionToken: this.sessionToken });
    } else {
      this.beacon();
    }
    this.sessionToken = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) setTimeout(() => socket.close(1000), 100);
  }

  // --- connection -----------------------------------------------------------

  async connect() {
    if (!this.joined) return;
    const url = await authorizedSocketURL(this, this.socketURL, this.options);
    if (!this.joined) return;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.backoff = 250;
      this.subscribedToken = null;
      this.heartbeatInFlight = false;
      this.status("connected");
      if (!this.hidden) this.heartbeat();
      else if (this.roomToken) this.subscribe(this.roomToken);
    };
    socket.onmessage = (event) => this.received(JSON.parse(event.data));
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.subscribedToken = null;
      this.heartbeatInFlight = false;
      for (const { reject } of this.pending.values()) reject(new Error("connection lost"));
      this.pending.clear();
      this.status("disconnected");
      if (!this.joined) return;
      this.timers.reconnect = setTimeout(() => this.connect(), nextReconnectDelay(this));
    };
  }

  send(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return null;
    const id = ++this.nextId;
    this.socket.send(JSON.stringify({ id, ...message }));
    return id;
  }

  request(message) {
    return new Promise((resolve, reject) => {
      const id = this.send(message);
      if (id === null) return reject(new Error("not connected"));
      this.pending.set(id, { resolve, reject, kind: message.type });
    });
  }

  heartbeat(force = false) {
    if (!this.joined || this.hidden) return;
    if (this.heartbeatInFlight && !force) return;  // never two in flight
    const { roomId, userId, name, image } = this.options;
    const message = { type: "heartbeat", roomId, userId, sessionId: this.sessionId, interval: this.currentInterval(), away: this.away };
    if (name) message.name = name;
    if (image) message.image = image;
    const id = this.send(message);
    if (id === null) return;
    this.heartbeatInFlight = true;
    this.pending.set(id, { resolve: () => {}, reject: () => {}, kind: "heartbeat" });
  }

  async reauthenticate() {
    try {
      await this.request({ type: "auth", token: await tokenOf(this.options) });
      this.heartbeat();
    } catch (error) {
      this.dispatchEvent(new CustomEvent("error", { detail: { code: "unauthenticated", message: String(error.message || error) } }));
    }
  }

  subscribe(token) {
    this.subscribedToken = token;
    this.send({ type: "subscribe", roomToken: token, limit: this.options.limit });
  }

  received(message) {
    const waiting = message.id !== undefined ? this.pending.get(message.id) : undefined;
    if (waiting) this.pending.delete(message.id);
    switch (message.type) {
      case "heartbeat":
        this.heartbeatInFlight = false;
        this.sessionToken = message.sessionToken;
        this.roomToken = message.roomToken;
        // Follow the room token of the latest heartbeat (it changes when a room's token rotates).
        if (this.subscribedToken !== message.roomToken) this.subscribe(message.roomToken);
        break;
      case "snapshot":
        if (message.roomToken !== this.subscribedToken) return;
        this.version = message.roomVersion;
        this.list = message.users.slice().sort(compareUsers);
        this.counts = countsOf(message, this.list);
        this.changed();
        break;
      case "diff":
        if (message.roomToken !== this.subscribedToken) return;
        if (message.from !== this.version) return this.subscribe(message.roomToken);  // missed something
        this.version = message.roomVersion;
        this.list = applyDiff(this.list, message);
        if (message.onlineCount !== undefined) this.counts = countsOf(message, this.list);
        this.changed();
        break;
      case "unsubscribed":
        if (message.reason && message.roomToken === this.subscribedToken) {
          this.subscribedToken = null;  // keep showing the last list until the new snapshot
          this.heartbeatInFlight = false;
          this.heartbeat();
        }
        if (waiting) waiting.resolve(message);
        break;
      case "error":
        if (waiting && waiting.kind !== "heartbeat") {
          waiting.reject(Object.assign(new Error(message.error.message), { code: message.error.code }));
        }
        if (waiting && waiting.kind === "heartbeat") {
          this.heartbeatInFlight = false;
          // An expired token: authenticate with a fresh one, then heartbeat again.
          if (message.error.code === "unauthenticated" && this.options.token) this.reauthenticate();
        }
        this.dispatchEvent(new CustomEvent("error", { detail: message.error }));
        break;
      default:
        if (waiting) waiting.resolve(message);
    }
  }

  changed() {
    const users = this.users;
    const counts = this.counts;
    if (this.options.onChange) this.options.onChange(users, counts);
    this.dispatchEvent(new CustomEvent("change", { detail: { users, counts } }));
  }

  status(state) {
    this.dispatchEvent(new CustomEvent("status", { detail: { state } }));
  }

  // --- page lifecycle ---------------------------------------------------------

  /** On unload: the one request a closing page can still send. */
  beacon() {
    // A closing page is hidden first: its away heartbeat must not follow the disconnect and
    // bring the session back.
    clearTimeout(this.timers.hidden);
    if (!this.sessionToken) return;
    navigator.sendBeacon(this.httpBase + "/api/disconnect", new Blob([this.sessionToken], { type: "text/plain" }));
  }

  visibilityChanged() {
    if (!this.joined) return;
    const hidden = document.visibilityState === "hidden";
    if (this.options.leaveWhenHidden) {
      if (hidden) {
        this.hidden = true;
        if (this.sessionToken) this.send({ type: "disconnect", sessionToken: this.sessionToken });
        this.sessionToken = null;
      } else if (this.hidden) {
        this.hidden = false;
        this.heartbeatInFlight = false;
        this.heartbeat();  // the same sessionId starts a new session
      }
      return;
    }
    this.tabHidden = hidden;
    clearTimeout(this.timers.hidden);
    if (hidden) {
      // Closing a page hides it just before `pagehide`: wait a moment, so a closing page sends
      // only its disconnect, never an away heartbeat that could land after it.
      this.timers.hidden = setTimeout(() => this.awayChanged(), 150);
      return;
    }
    this.inputSeen();  // showing the tab is activity
    this.awayChanged();
  }

  // --- away -------------------------------------------------------------------

  /** Away while the tab is hidden (unless it leaves instead) or nobody touched it for `idleAfter`. */
  isAway() {
    return (this.tabHidden && !this.options.leaveWhenHidden) || this.idle;
  }

  inputSeen() {
    this.lastInput = Date.now();
    if (this.idle) {
      this.idle = false;
      this.awayChanged();
    }
  }

  checkIdle() {
    if (this.idle || Date.now() - this.lastInput < this.options.idleAfter) return;
    this.idle = true;
    this.awayChanged();
  }

  /** One heartbeat at once when the state others see changes; none when it does not. */
  awayChanged() {
    const away = this.isAway();
    if (away === this.away) return;
    this.away = away;
    this.scheduleHeartbeats();
    this.heartbeat(true);
  }
}

/** Creates a room and joins it. */
export function joinRoom(options) {
  return new PresenceRoom(options).join();
}

/** Statuses in the order asked, with the newest status of each user folded in. */
export function applyUserStatuses(current, changed) {
  const byId = new Map(changed.map((status) => [status.userId, status]));
  return current.map((status) => byId.get(status.userId) || status);
}

/**
 * Follows users wherever they are (a friends list, a team sidebar): whether each is online in any room,
 * since when, and when last seen. One WebSocket, reconnecting with backoff; the server sends a status
 * only when it changes.
 *
 *   const friends = new PresenceUsers({ userIds: ["alice", "bob"], token });
 *   friends.addEventListener("change", (event) => render(event.detail.users));
 *   friends.start();
 */
export class PresenceUsers extends EventTarget {
  /**
   * @param {object} options
   * @param {string[]} options.userIds at most 1000
   * @param {string} [options.url] the server's base URL (default: this page's origin)
   * @param {string | (() => string | Promise<string>)} [options.token] a user token allowed to watch them
   * @param {(users: object[]) => void} [options.onChange] called with the statuses whenever one changes
   */
  constructor(options) {
    super();
    if (!options || !Array.isArray(options.userIds)) throw new Error("PresenceUsers needs userIds");
    this.options = { ...options };
    this.userIds = [...new Set(options.userIds)];
    this.socketURL = webSocketURL(this.options);
    /** One status per watched user, in the order asked; empty until the server answers. */
    this.users = [];
    this.socket = null;
    this.running = false;
    this.backoff = 250;
    this.reconnectTimer = null;
    this.nextId = 0;
  }

  /** Connects and starts watching. */
  start() {
    if (this.running) return this;
    this.running = true;
    this.connect();
    return this;
  }

  /** Stops watching and closes the socket. */
  stop() {
    this.running = false;
    clearTimeout(this.reconnectTimer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000);
  }

  /** Watches `userIds` instead of the current ones (adding and dropping only the difference). */
  setUserIds(userIds) {
    const next = [...new Set(userIds)];
    const added = next.filter((id) => !this.userIds.includes(id));
    const dropped = this.userIds.filter((id) => !next.includes(id));
    this.userIds = next;
    this.users = next.map((id) => this.users.find((s) => s.userId === id)).filter(Boolean);
    if (dropped.length) this.send({ type: "unwatchUsers", userIds: dropped });
    if (added.length) this.send({ type: "watchUsers", userIds: added });
    this.changed();
  }

  async connect() {
    if (!this.running) return;
    const url = await authorizedSocketURL(this, this.socketURL, this.options);
    if (!this.running) return;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.backoff = 250;
      if (this.userIds.length) this.send({ type: "watchUsers", userIds: this.userIds });
      this.dispatchEvent(new CustomEvent("status", { detail: { state: "connected" } }));
    };
    socket.onmessage = (event) => this.received(JSON.parse(event.data));
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.dispatchEvent(new CustomEvent("status", { detail: { state: "disconnected" } }));
      if (!this.running) return;
      this.reconnectTimer = setTimeout(() => this.connect(), nextReconnectDelay(this));
    };
  }

  send(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(JSON.stringify({ id: ++this.nextId, ...message }));
  }

  received(message) {
    switch (message.type) {
      case "users": {
        // The answer to one watchUsers: these users' statuses now.
        const known = new Map(this.users.map((s) => [s.userId, s]));
        for (const status of message.users) known.set(status.userId, status);
        this.users = this.userIds.map((id) => known.get(id)).filter(Boolean);
        this.changed();
        break;
      }
      case "usersChanged":
        this.users = applyUserStatuses(this.users, message.users);
        this.changed();
        break;
      case "unwatched":
        // The server ended the watches itself (the user token expired): a fresh token, then watch again.
        if (message.reason) this.rewatch();
        break;
      case "error":
        this.dispatchEvent(new CustomEvent("error", { detail: message.error }));
        break;
    }
  }

  async rewatch() {
    try {
      const token = await tokenOf(this.options);
      if (token) this.send({ type: "auth", token });
      // The server answers one socket's messages in order: the watch is asked with the fresh token.
      if (this.userIds.length) this.send({ type: "watchUsers", userIds: this.userIds });
    } catch (error) {
      this.dispatchEvent(new CustomEvent("error", { detail: { code: "token_unavailable", message: String(error) } }));
    }
  }

  changed() {
    const users = this.users;
    if (this.options.onChange) this.options.onChange(users);
    this.dispatchEvent(new CustomEvent("change", { detail: { users } }));
  }
}
