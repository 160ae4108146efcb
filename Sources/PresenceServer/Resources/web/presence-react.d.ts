// Types for presence-react.js: usePresence, useRoomCounts, usePresenceUsers and <FacePile> for React 18 and 19.
import type { PresenceRoom, PresenceRoomOptions, PresenceUser, PresenceUsersOptions, RoomCounts, UserStatus } from "./presence.js";

/** presence.js's options, less the room and user the hook takes as arguments. */
export type UsePresenceOptions = Omit<PresenceRoomOptions, "roomId" | "userId" | "onChange">;

/** The room's list, you first, kept live; undefined until the first list arrives. */
export function usePresence(roomId: string, userId: string, options?: UsePresenceOptions): PresenceUser[] | undefined;

/** The whole room's counts, whatever the list's limit; undefined until the first list arrives. Shares usePresence's room. */
export function useRoomCounts(roomId: string, userId: string, options?: UsePresenceOptions): RoomCounts | undefined;

/** Users followed across every room, in the order given, kept live; undefined until the server answers. */
export function usePresenceUsers(userIds: readonly string[], options?: Omit<PresenceUsersOptions, "userIds" | "onChange">): UserStatus[] | undefined;

/** The room handle behind usePresence for the same arguments (to call `update`), or undefined. */
export function presenceRoomFor(roomId: string, userId: string, options?: UsePresenceOptions): PresenceRoom | undefined;

export interface FacePileProps {
  users?: readonly PresenceUser[];
  /** The room's counts (useRoomCounts): the "+N" then counts a big room's every user. */
  counts?: RoomCounts;
  className?: string;
  style?: Record<string, string | number>;
}

/** The same face pile as <presence-facepile>. */
export function FacePile(props: FacePileProps): unknown;
