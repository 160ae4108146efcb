// What an app writes with the browser client's types: this must compile under --strict.
import { PresenceRoom, PresenceUsers, applyDiff, applyUserStatuses, joinRoom, youFirst, type PresenceUser, type RoomCounts, type UserStatus } from "../../Sources/PresenceServer/Resources/web/presence.js";
import { facePileModel, formatCount, statusText } from "../../Sources/PresenceServer/Resources/web/presence-facepile.js";
import { FacePile, presenceRoomFor, usePresence, usePresenceUsers, useRoomCounts } from "../../Sources/PresenceServer/Resources/web/presence-react.js";

const room = new PresenceRoom({
  roomId: "doc-42",
  userId: "alice",
  name: "Alice",
  interval: 5000,
  idleAfter: 120_000,
  token: async () => "a-token",
  onChange: (users: PresenceUser[], counts: RoomCounts | null) => console.log(users.length, counts?.online),
});
room.addEventListener("change", (event) => {
  const first: PresenceUser | undefined = event.detail.users[0];
  const shown: string = first ? `${first.name ?? first.userId}: ${statusText(first)}` : "nobody";
  console.log(shown, first?.away === true);
});
room.addEventListener("status", (event) => console.log(event.detail.state === "connected"));
room.addEventListener("change", (event) => {
  const counts: RoomCounts | null = event.detail.counts;
  console.log(counts ? `${formatCount(counts.online)} online of ${counts.users}` : "loading");
});
room.addEventListener("error", (event) => console.log(event.detail.code, event.detail.message));
room.join();
void room.update({ typing: true, cursor: [1, 2], note: null });
room.setProfile({ name: "Alice B." });

const other = joinRoom({ roomId: "doc-42", userId: "bob", leaveWhenHidden: true });
const list = youFirst(applyDiff(room.users, { upsert: other.users, remove: ["carol"] }), "alice");
const pile = facePileModel(list, Date.now(), room.counts?.users);
console.log(pile.visible.map((face) => `${face.emoji} ${face.title} ${face.status}`), pile.overflowCount);

const element = document.createElement("presence-facepile");
element.room = room;
element.users = list;
element.counts = room.counts;
other.leave();

// React: the hook's list is undefined while loading.
const maybeUsers = usePresence("doc-42", "alice", { interval: 5000, token: "t", idleAfter: 60_000 });
const names: string[] = (maybeUsers ?? []).map((user) => user.name ?? user.userId);
void presenceRoomFor("doc-42", "alice")?.update({ typing: false });
const roomCounts = useRoomCounts("doc-42", "alice");
FacePile({ users: maybeUsers, counts: roomCounts, className: "pile" });
const watched = usePresenceUsers(["bob"], { token: "t" });
console.log(watched?.[0]?.online === true, roomCounts?.online);
console.log(names);

// Watching users across rooms: a friends list.
const friends = new PresenceUsers({ userIds: ["alice", "bob"], token: () => "t", onChange: (users: UserStatus[]) => console.log(users.length) });
friends.addEventListener("change", (event) => {
  for (const status of event.detail.users) console.log(status.userId, status.online, status.away, status.rooms, status.lastDisconnected);
});
friends.start();
friends.setUserIds(["carol"]);
const merged: UserStatus[] = applyUserStatuses(friends.users, [{ userId: "carol", online: true, away: false, lastDisconnected: 0, rooms: 1 }]);
console.log(merged.length);
friends.stop();
