// Types for presence-facepile.js: the <presence-facepile> element and the rules it draws by.
import type { JSONValue, PresenceRoom, PresenceUser, RoomCounts } from "./presence.js";

/** The emoji a user without an image gets, chosen by a hash of the user id. */
export const EMOJIS: readonly string[];
/** Faces shown before the "+N". */
export const VISIBLE: number;
/** Users listed in the "+N" popover at most. */
export const OVERFLOW_LISTED: number;

/** A stable emoji per user id (FNV-1a over the UTF-8 bytes, as the Swift client). */
export function emojiFor(userId: string): string;
/** "Online now", "Away for 3 min", or "Last seen 5 min ago". */
export function statusText(user: PresenceUser, now?: number): string;
/** JSON with object keys in code point order. */
export function sortedJSON(value: JSONValue): string;
/** The user's data as [key, value] rows. */
export function dataRows(data: JSONValue | undefined): [string, string][];

/** One face of the pile. */
export interface Face {
  userId: string;
  /** The name, or the user id. */
  title: string;
  image: string | null;
  emoji: string;
  online: boolean;
  away: boolean;
  status: string;
  dataRows: [string, string][];
}

export interface FacePileModel {
  visible: Face[];
  /** How many users are not among `visible` (the "+N"). */
  overflowCount: number;
  /** Up to OVERFLOW_LISTED of them, for the popover. */
  overflow: Face[];
}

/**
 * What the pile shows for a list (shared test vectors keep the Swift FacePileModel the same).
 * `userCount`: the room's count, when the list holds only the first users of a big room.
 */
export function facePileModel(users: readonly PresenceUser[], now?: number, userCount?: number): FacePileModel;
/** 1190 as "1,190". */
export function formatCount(count: number): string;

/** `<presence-facepile>`: set `users`, or bind it to a room with `room`. */
export class PresenceFacepile extends HTMLElement {
  users: PresenceUser[];
  /** The room's counts, for "+1,190" when the list is only the first users; a bound room sets them. */
  counts: RoomCounts | null;
  room: PresenceRoom | null;
  render(): void;
}

declare global {
  interface HTMLElementTagNameMap {
    "presence-facepile": PresenceFacepile;
  }
}
