// presence-react.js — React bindings for presence.js: usePresence and <FacePile>. No build step:
// "react" is resolved by your bundler or an import map (React 18 or 19).
//
//   import { usePresence, FacePile } from "/presence-react.js";
//   function Avatars({ docId, me }) {
//     const users = usePresence(docId, me.id, { name: me.name });
//     return users === undefined ? null : <FacePile users={users} />;
//   }
import { createElement, useCallback, useEffect, useRef, useSyncExternalStore } from "react";
import { PresenceRoom } from "./presence.js";
import "./presence-facepile.js";

/**
 * One PresenceRoom per server, room and user, shared by every component that asks for it and
 * left shortly after the last one lets go. The short delay is what makes React's StrictMode
 * (effects run, undone and run again) reuse the same socket and session instead of opening two.
 */
const entries = new Map();

function keyOf(roomId, userId, options) {
  return JSON.stringify([options.url || "", roomId, userId]);
}

function acquire(key, roomId, userId, options) {
  let entry = entries.get(key);
  if (entry) {
    clearTimeout(entry.releaseTimer);
    entry.releaseTimer = null;
  } else {
    const room = new PresenceRoom({ ...options, roomId, userId });
    entry = { room, users: undefined, listeners: new Set(), holders: 0, releaseTimer: null };
    const created = entry;
    room.addEventListener("change", (event) => {
      created.users = event.detail.users;
      for (const listener of created.listeners) listener();
    });
    entries.set(key, entry);
    room.join();
  }
  entry.holders += 1;
  return entry;
}

function release(key, entry) {
  entry.holders -= 1;
  if (entry.holders > 0) return;
  entry.releaseTimer = setTimeout(() => {
    if (entry.holders > 0 || entries.get(key) !== entry) return;
    entries.delete(key);
    entry.room.leave();
  }, 0);
}

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
  const key = keyOf(roomId, userId, options);
  const latestOptions = useRef(options);
  latestOptions.current = options;

  const subscribe = useCallback(
    (notify) => {
      const entry = acquire(key, roomId, userId, latestOptions.current);
      entry.listeners.add(notify);
      // The list may have arrived before this component listened.
      if (entry.users !== undefined) notify();
      return () => {
        entry.listeners.delete(notify);
        release(key, entry);
      };
    },
    [key, roomId, userId],
  );
  const getSnapshot = useCallback(() => entries.get(key)?.users, [key]);
  const users = useSyncExternalStore(subscribe, getSnapshot, () => undefined);

  const { name, image } = options;
  useEffect(() => {
    const entry = entries.get(key);
    if (!entry) return;
    const current = entry.room.options;
    if ((name !== undefined && name !== current.name) || (image !== undefined && image !== current.image)) {
      entry.room.setProfile({ name, image });
    }
  }, [key, name, image]);
  return users;
}

/** The room handle behind `usePresence` for the same arguments (to call `update`), or undefined. */
export function presenceRoomFor(roomId, userId, options = {}) {
  return entries.get(keyOf(roomId, userId, options))?.room;
}

/**
 * The face pile: the same element, rules and look as <presence-facepile> (five faces, "+N",
 * tooltips; offline dimmed, away with a clock).
 *
 * @param {{ users?: object[], className?: string, style?: object }} props
 */
export function FacePile({ users, className, style }) {
  const element = useRef(null);
  useEffect(() => {
    if (element.current) element.current.users = users || [];
  }, [users]);
  return createElement("presence-facepile", { ref: element, className, style });
}
