// Types for presence.js, the browser client of swift-presence (protocol: docs/PROTOCOL.md).

/** Any JSON value: what a user's `data` may hold. */
export type JSONValue = null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue };

/** One user's presence in one room, as every list, snapshot and diff shows it. */
export interface PresenceUser {
  userId: string;
  /** Whether any session of the user in this room is alive. */
  online: boolean;
  /** 0 while online; when the user went offline otherwise (ms since the epoch). */
  lastDisconnected: number;
  /** Start of the current online stretch; 0 while offline. */
  onlineSince: number;
  /** Online, and every live session of the user in this room is away. Absent from servers before 1.1. */
  away?: boolean;
  /** When the user became away; 0 when not away. */
  awaySince?: number;
  data?: JSONValue;
  name?: string;
  image?: string;
}

/** What changed between two versions of a room's list. */
export interface RoomDiff {
  upsert?: PresenceUser[];
  remove?: string[];
}

/** Unicode code point order (the server's order of user ids); negative, zero or positive. */
export function compareCodePoints(a: string, b: string): number;
/** PROTOCOL.md's order: online by onlineSince, then offline newest first, then userId. */
export function compareUsers(a: PresenceUser, b: PresenceUser): number;
/** The list a diff leads to. */
export function applyDiff(users: readonly PresenceUser[], diff: RoomDiff): PresenceUser[];
/** The list as `userId` sees it: themselves first. */
export function youFirst(users: readonly PresenceUser[], userId: string): PresenceUser[];

/** The whole room's counts, whatever the list's limit. */
export interface RoomCounts {
  /** Users online in the room. */
  online: number;
  /** Users with a record in the room (online or last seen). */
  users: number;
}

/** A user's presence across every room. */
export interface UserStatus {
  userId: string;
  /** Online in at least one room. */
  online: boolean;
  /** Online, and away in every room they are online in. */
  away: boolean;
  /** While offline everywhere: when last seen (ms since the epoch); 0 while online or never seen. */
  lastDisconnected: number;
  /** Rooms the user is online in. */
  rooms: number;
}

/** Statuses in the order of `current`, with those in `changed` replacing theirs. */
export function applyUserStatuses(current: readonly UserStatus[], changed: readonly UserStatus[]): UserStatus[];

/** A user token, or a function that returns a fresh one. */
export type TokenSource = string | (() => string | Promise<string>);

export interface PresenceRoomOptions {
  roomId: string;
  userId: string;
  /** The server's base URL (default: this page's origin). */
  url?: string;
  /** One per tab (default: random). It belongs to this user: other users' ids never clash with it. */
  sessionId?: string;
  /** Heartbeat interval in ms, 1000–300000 (default 10000). */
  interval?: number;
  name?: string;
  /** An http: or https: avatar URL. */
  image?: string;
  /** How many users the list holds (default 104). */
  limit?: number;
  /** Leave (offline) while the tab is hidden instead of showing away (default false). */
  leaveWhenHidden?: boolean;
  /** ms without pointer, keyboard or touch input after which a visible tab is away (default 300000; 0 never). */
  idleAfter?: number;
  /** Heartbeat interval in ms while the tab is hidden and away (default 60000). */
  hiddenInterval?: number;
  /** For servers that require user authentication. */
  token?: TokenSource;
  /** Called with the list (you first) and the room's counts whenever either changes. */
  onChange?: (users: PresenceUser[], counts: RoomCounts | null) => void;
}

/** PROTOCOL.md's error body. */
export interface PresenceErrorDetail {
  code: string;
  message: string;
}

export interface PresenceRoomEventMap {
  change: CustomEvent<{ users: PresenceUser[]; counts: RoomCounts | null }>;
  status: CustomEvent<{ state: "connected" | "disconnected" }>;
  error: CustomEvent<PresenceErrorDetail>;
}

/** One room of one user over one WebSocket: heartbeats, the live list, updates. */
export class PresenceRoom extends EventTarget {
  constructor(options: PresenceRoomOptions);
  readonly options: PresenceRoomOptions;
  readonly sessionId: string;
  readonly roomToken: string | null;
  readonly sessionToken: string | null;
  /** The current list: you first, then the room's order. */
  readonly users: PresenceUser[];
  /** The whole room's counts; null before the first snapshot. */
  readonly counts: RoomCounts | null;
  /** Starts heartbeating and following the room. */
  join(): this;
  /** Sets this user's data in the room (null clears it); resolves once stored. */
  update(data: JSONValue): Promise<unknown>;
  /** Changes the display name or image; a heartbeat goes out at once. */
  setProfile(profile: { name?: string; image?: string }): void;
  /** Ends the session at once and stops everything. */
  leave(): void;

  addEventListener<K extends keyof PresenceRoomEventMap>(
    type: K, listener: (this: PresenceRoom, event: PresenceRoomEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof PresenceRoomEventMap>(
    type: K, listener: (this: PresenceRoom, event: PresenceRoomEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** Creates a room and joins it. */
export function joinRoom(options: PresenceRoomOptions): PresenceRoom;

export interface PresenceUsersOptions {
  /** At most 1000. */
  userIds: string[];
  /** The server's base URL (default: this page's origin). */
  url?: string;
  /** A user token allowed to watch these users (the JWT's presence_watch claim). */
  token?: TokenSource;
  /** Called with the statuses, in the order asked, whenever one changes. */
  onChange?: (users: UserStatus[]) => void;
}

export interface PresenceUsersEventMap {
  change: CustomEvent<{ users: UserStatus[] }>;
  status: CustomEvent<{ state: "connected" | "disconnected" }>;
  error: CustomEvent<PresenceErrorDetail>;
}

/** Follows users across every room (a friends list): live global statuses over one WebSocket. */
export class PresenceUsers extends EventTarget {
  constructor(options: PresenceUsersOptions);
  readonly userIds: string[];
  /** One status per watched user, in the order asked; empty until the server answers. */
  readonly users: UserStatus[];
  /** Connects and starts watching. */
  start(): this;
  /** Stops watching and closes the socket. */
  stop(): void;
  /** Watches these users instead (only the difference goes to the server). */
  setUserIds(userIds: string[]): void;

  addEventListener<K extends keyof PresenceUsersEventMap>(
    type: K, listener: (this: PresenceUsers, event: PresenceUsersEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof PresenceUsersEventMap>(
    type: K, listener: (this: PresenceUsers, event: PresenceUsersEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}
