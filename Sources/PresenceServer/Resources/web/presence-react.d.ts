// Types for presence-react.js: usePresence and <FacePile> for React 18 and 19.
import type { PresenceRoom, PresenceRoomOptions, PresenceUser } from "./presence.js";

/** presence.js's options, less the room and user the hook takes as arguments. */
export type UsePresenceOptions = Omit<PresenceRoomOptions, "roomId" | "userId" | "onChange">;

/** The room's list, you first, kept live; undefined until the first list arrives. */
export function usePresence(roomId: string, userId: string, options?: UsePresenceOptions): PresenceUser[] | undefined;

/** The room handle behind usePresence for the same arguments (to call `update`), or undefined. */
export function presenceRoomFor(roomId: string, userId: string, options?: UsePresenceOptions): PresenceRoom | undefined;

export interface FacePileProps {
  users?: readonly PresenceUser[];
  className?: string;
  style?: Record<string, string | number>;
}

/** The same face pile as <presence-facepile>. */
export function FacePile(props: FacePileProps): unknown;
