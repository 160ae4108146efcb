// presence-react.js — React bindings for presence.js: usePresence, useRoomCounts, usePresenceUsers
// and <FacePile>. No build step:
// "react" is resolved by your bundler or an import map (React 18 or 19).
//
//   import { usePresence, FacePile } from "/presence-react.js";
//   function Avatars({ docId, me }) {
//     const users = usePresence(docId, me.id, { name: me.name });
//     return users === undefined ? null : <FacePile users={users} />;
//   }
import { createElement, useCallback, useEffect, useRef, useSyncExternalStore } from "react";
import { PresenceRoom, PresenceUsers } from "./presence.js";
import "./presence-facepile.js";

/**
 * One live handle (a PresenceRoom per server, room and user; a PresenceUsers per server and list of
 * users) shared by every component that asks for it, and stopped shortly after the last one lets
 * go. The short delay is what makes React's StrictMode (effects run, undone and run again) reuse
 * the same socket and session instead of opening two.
 */
const entries = new Map();

function roomKey(roomId, userId, options) {
  return JSON.stringify(["room", options.url || "", roomId, userId]);
}

function usersKey(userIds, options) {
  return JSON.stringify(["users", options.url || "", ...userIds]);
}

/** `start(entry)` makes the handle, which sets `entry.value` and calls `entry.changed()`. */
function acquire(key, start) {
  let entry = entries.get(key);
  if (entry) {
    clearTimeout(entry.releaseTimer);
    entry.releaseTimer = null;
  } else {
    entry = { handle: null, value: undefined, listeners: new Set(), holders: 0, releaseTimer: null };
    const created = entry;
    created.changed = () => { for (const listener of created.listeners) listener(); };
    entries.set(key, entry);
    entry.handle = start(entry);
  }
  entry.holders += 1;
  return entry;
}

function release(key, entry, stop) {
  entry.holders -= 1;
  if (entry.holders > 0) return;
  entry.releaseTimer = setTimeout(() => {
    if (entry.holders > 0 || entries.get(key) !== entry) return;
    entries.delete(key);
    stop(entry.handle);
  }, 0);
}

function startRoom(roomId, userId, options) {
  return (entry) => {
    const room = new PresenceRoom({ ...options, roomId, userId });
    room.addEventListener("change", (event) => {
      // One object per change, so each hook's snapshot changes only when its part does.
      const previous = entry.value;
      entry.value = {
        users: event.detail.users,
        counts: previous && sameCounts(previous.counts, event.detail.counts) ? previous.counts : event.detail.counts,
      };
      entry.changed();
    });
    room.join();
    return room;
  };
}

function sameCounts(a, b) {
  return a === b || (a && b && a.online === b.online && a.users === b.users);
}

/** Subscribes the calling component to the shared handle under `key`, reading `read(entry.value)`. */
function useShared(key, start, stop, read) {
  const latestStart = useRef(start);
  latestStart.current = start;
  const subscribe = useCallback(
    (notify) => {
      const entry = acquire(key, latestStart.current);
      entry.listeners.add(notify);
      // The value may have arrived before this component listened.
      if (entry.value !== undefined) notify();
      return () => {
        entry.listeners.delete(notify);
        release(key, entry, stop);
      };
    },
    [key],
  );
  const getSnapshot = useCallback(() => {
    const value = entries.get(key)?.value;
    return value === undefined ? undefined : read(value);
  }, [key]);
  return useSyncExternalStore(subscribe, getSnapshot, () => undefined);
}

const leaveRoom = (room) => room.leave();
const readUsers = (value) => value.users;
const readCounts = (value) => value.counts || undefined;

/**
 * The room's list, you first, kept live: `undefined` until the first list arrives.
 *
 * @param {string} roomId
 * @param {string} userId
 * @param {object} [options] presence.js's options: `url` (server), `interval`, `token`, `name`, `image`,
 *   `limit`, `idleAfter`, `hiddenInterval`, `leaveWhenHidden`. Changing `roomId`, `userId` or `url` leaves
 *   the old room and joins the new one; a changed `name` or `image` is sent with a heartbeat.
 */
export function usePresence(roomId, userId, options = {}) {
  const key = roomKey(roomId, userId, options);
  const users = useShared(key, startRoom(roomId, userId, options), leaveRoom, readUsers);

  const { name, image } = options;
  useEffect(() => {
    const room = entries.get(key)?.handle;
    if (!room) return;
    const current = room.options;
    if ((name !== undefined && name !== current.name) || (image !== undefined && image !== current.image)) {
      room.setProfile({ name, image });
    }
  }, [key, name, image]);
  return users;
}

/**
 * The whole room's counts, `{ online, users }`, whatever the list's `limit` (a webinar's "1,204
 * online"): `undefined` until the first list arrives. Shares `usePresence`'s room and session.
 */
export function useRoomCounts(roomId, userId, options = {}) {
  return useShared(roomKey(roomId, userId, options), startRoom(roomId, userId, options), leaveRoom, readCounts);
}

/**
 * Users followed across every room (a friends list): their statuses in the order given, kept live;
 * `undefined` until the server answers. Components asking for the same users share one socket.
 *
 * @param {string[]} userIds at most 1000
 * @param {object} [options] `url`, `token`
 */
export function usePresenceUsers(userIds, options = {}) {
  const key = usersKey(userIds, options);
  const start = (entry) => {
    const watcher = new PresenceUsers({ ...options, userIds, onChange: (users) => { entry.value = users; entry.changed(); } });
    watcher.start();
    return watcher;
  };
  return useShared(key, start, (watcher) => watcher.stop(), (value) => value);
}

/** The room handle behind `usePresence` for the same arguments (to call `update`), or undefined. */
export function presenceRoomFor(roomId, userId, options = {}) {
  return entries.get(roomKey(roomId, userId, options))?.handle;
}

/**
 * The face pile: the same element, rules and look as <presence-facepile> (five faces, "+N",
 * tooltips; offline dimmed, away with a clock).
 *
 * @param {{ users?: object[], counts?: { online: number, users: number }, className?: string, style?: object }} props
 *   `counts` (from useRoomCounts) makes the "+N" count a big room's every user.
 */
export function FacePile({ users, counts, className, style }) {
  const element = useRef(null);
  useEffect(() => {
    if (!element.current) return;
    element.current.counts = counts || null;
    element.current.users = users || [];
  }, [users, counts]);
  return createElement("presence-facepile", { ref: element, className, style });
}
