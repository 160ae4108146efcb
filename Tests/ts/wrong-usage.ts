// Mistakes the types must catch: each line marked `expect TSxxxx` must fail with that error.
import { PresenceRoom, PresenceUsers } from "../../Sources/PresenceServer/Resources/web/presence.js";
import { facePileModel } from "../../Sources/PresenceServer/Resources/web/presence-facepile.js";
import { usePresence } from "../../Sources/PresenceServer/Resources/web/presence-react.js";

const room = new PresenceRoom({ roomId: "doc" }); // expect TS2345: userId is required
room.update(() => 1); // expect TS2345: data must be JSON
const count: number = room.users[0].name; // expect TS2322: name is a string or undefined
room.addEventListener("change", (event) => event.detail.nope); // expect TS2339: no such detail
new PresenceRoom({ roomId: "doc", userId: "u", interval: "10s" }); // expect TS2322: interval is a number
facePileModel([{ userId: "u" }]); // expect TS2739: a user needs online, lastDisconnected, onlineSince
const list: string[] = usePresence("doc", "u"); // expect TS2322: the list may still be loading (undefined)
new PresenceUsers({ userIds: "alice" }); // expect TS2322: userIds is an array
const online: string = room.counts!.online; // expect TS2322: counts are numbers
console.log(count, list, online);
