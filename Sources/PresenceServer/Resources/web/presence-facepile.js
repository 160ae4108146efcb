// <presence-facepile> — overlapping avatars of who is in a room. No dependencies.
//
//   import "/presence-facepile.js";
//   const pile = document.querySelector("presence-facepile");
//   pile.users = [{ userId: "alice", online: true, ... }];   // on its own
//   pile.room = presenceRoom;                                 // or bound to a PresenceRoom
//
// Theme it with CSS custom properties: --presence-avatar-size, --presence-avatar-bg,
// --presence-ring-color, --presence-focus-color, --presence-offline-opacity, --presence-away-opacity,
// --presence-tooltip-bg, --presence-tooltip-color, --presence-font.

import { compareCodePoints } from "./presence.js";

export const EMOJIS = ["🦊", "🐼", "🐨", "🐯", "🦁", "🐸", "🐵", "🐙", "🦉", "🐧", "🐢", "🦄", "🐝", "🐳", "🦋", "🐞"];
export const VISIBLE = 5;
export const OVERFLOW_LISTED = 10;

/** A stable emoji per user id: FNV-1a over the UTF-8 bytes, as the Swift client does. */
export function emojiFor(userId) {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(userId)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return EMOJIS[hash % EMOJIS.length];
}

/** "just now", or "5 min", "2 hours", "3 days" with the prefix and suffix around it. */
function elapsed(start, now, prefix, suffix) {
  const minutes = Math.floor(Math.max(0, now - start) / 60000);
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${prefix}${minutes} min${suffix}`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${prefix}${hours} ${hours === 1 ? "hour" : "hours"}${suffix}`;
  const days = Math.floor(hours / 24);
  return `${prefix}${days} ${days === 1 ? "day" : "days"}${suffix}`;
}

/** "Online now", "Away for 3 min", or "Last seen just now / 5 min ago / 2 hours ago / 3 days ago". */
export function statusText(user, now = Date.now()) {
  if (user.online && user.away) return `Away ${elapsed(user.awaySince, now, "for ", "")}`;
  if (user.online) return "Online now";
  return `Last seen ${elapsed(user.lastDisconnected, now, "", " ago")}`;
}

/** A value as JSON with object keys in code point order, so every client shows nested data alike. */
export function sortedJSON(value) {
  if (Array.isArray(value)) return `[${value.map(sortedJSON).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort(compareCodePoints);
    return `{${keys.map((key) => `${JSON.stringify(key)}:${sortedJSON(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** The user's data as [key, value] rows: an object by key, any other value as one "data" row. */
export function dataRows(data) {
  if (data === undefined || data === null) return [];
  const text = (value) => (typeof value === "string" ? value : sortedJSON(value));
  if (typeof data === "object" && !Array.isArray(data)) return Object.keys(data).sort(compareCodePoints).map((k) => [k, text(data[k])]);
  return [["data", text(data)]];
}

/**
 * What the pile shows, as plain data: the first five faces, how many more ("+N"), and up to ten of
 * those for the overflow list. The Swift FacePileModel computes the same (shared test vectors).
 * `userCount` is the room's count when the list holds only the first users of a big room.
 */
export function facePileModel(users, now = Date.now(), userCount = users.length) {
  const face = (user) => ({
    userId: user.userId,
    title: user.name || user.userId,
    image: user.image || null,
    emoji: emojiFor(user.userId),
    online: user.online,
    away: Boolean(user.online && user.away),
    status: statusText(user, now),
    dataRows: dataRows(user.data),
  });
  const visible = users.slice(0, VISIBLE).map(face);
  return {
    visible,
    overflowCount: Math.max(0, Math.max(userCount, users.length) - visible.length),
    overflow: users.slice(VISIBLE, VISIBLE + OVERFLOW_LISTED).map(face),
  };
}

const STYLE = `
  :host { display: inline-flex; align-items: center; position: relative; font: var(--presence-font, 14px system-ui, sans-serif); }
  .face { --size: var(--presence-avatar-size, 36px); width: var(--size); height: var(--size); margin-left: calc(var(--size) / -4);
    border-radius: 50%; border: 2px solid var(--presence-ring-color, #fff); background: var(--presence-avatar-bg, #eef);
    display: inline-flex; align-items: center; justify-content: center; padding: 0; font-size: calc(var(--size) * 0.55);
    cursor: default; position: relative; overflow: visible; }
  .face:first-child { margin-left: 0; }
  .face img { width: 100%; height: 100%; border-radius: 50%; object-fit: cover; }
  .face.offline > .avatar { opacity: var(--presence-offline-opacity, 0.4); filter: grayscale(0.6); }
  .face.away > .avatar { opacity: var(--presence-away-opacity, 0.65); }
  .face.away::after { content: "🕒"; position: absolute; right: -4px; bottom: -4px; font-size: calc(var(--size) * 0.38);
    line-height: 1; background: var(--presence-ring-color, #fff); border-radius: 50%; }
  .face:focus-visible { outline: 2px solid var(--presence-focus-color, #4a7cff); outline-offset: 2px; z-index: 2; }
  .more { font-size: calc(var(--presence-avatar-size, 36px) * 0.35); font-weight: 600; cursor: pointer; }
  .tooltip { display: none; position: absolute; top: calc(100% + 6px); left: 50%; transform: translateX(-50%); z-index: 3;
    background: var(--presence-tooltip-bg, #222); color: var(--presence-tooltip-color, #fff); border-radius: 6px;
    padding: 6px 8px; font-size: 12px; white-space: nowrap; text-align: left; line-height: 1.4; }
  .face:hover .tooltip, .face:focus .tooltip { display: block; }
  .tooltip .name { font-weight: 600; }
  .overflow { position: absolute; top: calc(100% + 6px); right: 0; z-index: 4; background: var(--presence-tooltip-bg, #222);
    color: var(--presence-tooltip-color, #fff); border-radius: 6px; padding: 4px 0; margin: 0; list-style: none; min-width: 12em; }
  .overflow[hidden] { display: none; }
  .overflow li { padding: 3px 10px; white-space: nowrap; }
  .overflow li.offline { opacity: 0.6; }
`;

/** 1190 as "1,190": the same digits on every page, whatever the browser's language. */
export function formatCount(count) {
  return String(count).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

// Node runs the pure functions above in the unit tests; it has no DOM.
const ElementBase = globalThis.HTMLElement ?? class {};

export class PresenceFacepile extends ElementBase {
  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this._users = [];
    this._counts = null;
    this._room = null;
    this._onChange = (event) => {
      this._counts = event.detail.counts || null;
      this.users = event.detail.users;
    };
  }

  connectedCallback() { this.render(); }

  /** The list to show (the protocol's order, or a PresenceRoom's `users`). */
  get users() { return this._users; }
  set users(list) { this._users = Array.isArray(list) ? list : []; this.render(); }

  /** Follows a PresenceRoom: shows its list and every change. */
  get room() { return this._room; }
  set room(room) {
    if (this._room) this._room.removeEventListener("change", this._onChange);
    this._room = room;
    this._counts = room ? room.counts || null : null;
    if (room) { room.addEventListener("change", this._onChange); this.users = room.users; }
  }

  /** The room's counts ({ online, users }) when the list is only the first of a big room; a room sets them. */
  get counts() { return this._counts; }
  set counts(counts) { this._counts = counts || null; this.render(); }

  render() {
    const root = this.shadowRoot;
    root.replaceChildren();
    const style = document.createElement("style");
    style.textContent = STYLE;
    root.append(style);
    const counts = this._counts || { online: this._users.filter((u) => u.online).length, users: this._users.length };
    const model = facePileModel(this._users, Date.now(), counts.users);
    const group = document.createElement("div");
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", `${formatCount(counts.online)} online, ${formatCount(counts.users)} in the room`);
    group.style.display = "inline-flex";
    root.append(group);

    model.visible.forEach((face, index) => group.append(this.face(face, index)));
    const rest = model.overflowCount;
    if (rest > 0) {
      const more = document.createElement("button");
      more.className = "face more";
      more.textContent = `+${formatCount(rest)}`;
      more.setAttribute("aria-label", `${formatCount(rest)} more`);
      more.setAttribute("aria-expanded", "false");
      const list = document.createElement("ul");
      list.className = "overflow";
      list.hidden = true;
      list.id = "overflow";
      more.setAttribute("aria-controls", "overflow");
      for (const face of model.overflow) {
        const item = document.createElement("li");
        item.className = face.online ? (face.away ? "online away" : "online") : "offline";
        item.textContent = `${face.emoji} ${face.title} — ${face.status}`;
        list.append(item);
      }
      more.addEventListener("click", () => {
        list.hidden = !list.hidden;
        more.setAttribute("aria-expanded", String(!list.hidden));
      });
      more.addEventListener("keydown", (event) => {
        if (event.key === "Escape") { list.hidden = true; more.setAttribute("aria-expanded", "false"); }
      });
      group.append(more);
      root.append(list);
    }
  }

  face(model, index) {
    const { title, status } = model;
    const face = document.createElement("button");
    face.className = `face ${model.online ? "online" : "offline"}${model.away ? " away" : ""}`;
    face.dataset.userId = model.userId;
    face.style.zIndex = String(VISIBLE - index);
    const tooltipId = `tip-${index}`;
    face.setAttribute("aria-label", `${title}, ${status}`);
    face.setAttribute("aria-describedby", tooltipId);

    const avatar = document.createElement("span");
    avatar.className = "avatar";
    if (model.image) {
      const img = document.createElement("img");
      img.src = model.image;
      img.alt = "";
      avatar.append(img);
    } else {
      avatar.textContent = model.emoji;
    }
    face.append(avatar);

    const tooltip = document.createElement("span");
    tooltip.className = "tooltip";
    tooltip.id = tooltipId;
    tooltip.setAttribute("role", "tooltip");
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = title;
    const line = document.createElement("div");
    line.className = "status";
    line.textContent = status;
    tooltip.append(name, line);
    for (const [key, value] of model.dataRows) {
      const row = document.createElement("div");
      row.className = "data";
      row.textContent = `${key}: ${value}`;
      tooltip.append(row);
    }
    face.append(tooltip);
    return face;
  }
}

if (globalThis.customElements && !customElements.get("presence-facepile")) {
  customElements.define("presence-facepile", PresenceFacepile);
}
