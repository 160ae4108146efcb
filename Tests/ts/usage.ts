// What an app writes with the browser client's types: this must compile under --strict.
import { PresenceRoom, applyDiff, joinRoom, youFirst, type PresenceUser } from "../../Sources/PresenceServer/Resources/web/presence.js";
import { facePileModel, statusText } from "../../Sources/PresenceServer/Resources/web/presence-facepile.js";
import { FacePile, presenceRoomFor, usePresence } from "../../Sources/PresenceServer/Resources/web/presence-react.js";

const room = new PresenceRoom({
  roomId: "doc-42",
  userId: "alice",
  name: "Alice",
  interval: 5000,
  idleAfter: 120_000,
  token: async () => "a-token",
  onChange: (users: PresenceUser[]) => console.log(users.length),
});
room.addEventListener("change", (event) => {
  const first: PresenceUser | undefined = event.detail.users[0];
  const shown: string = first ? `${first.name ?? first.userId}: ${statusText(first)}` : "nobody";
  console.log(shown, first?.away === true);
});
room.addEventListener("status", (event) => console.log(event.detail.state === "connected"));
room.addEventListener("error", (event) => console.log(event.detail.code, event.detail.message));
room.join();
void room.update({ typing: true, cursor: [1, 2], note: null });
room.setProfile({ name: "Alice B." });

const other = joinRoom({ roomId: "doc-42", userId: "bob", leaveWhenHidden: true });
const list = youFirst(applyDiff(room.users, { upsert: other.users, remove: ["carol"] }), "alice");
const pile = facePileModel(list, Date.now());
console.log(pile.visible.map((face) => `${face.emoji} ${face.title} ${face.status}`), pile.overflowCount);

const element = document.createElement("presence-facepile");
element.room = room;
element.users = list;
other.leave();

// React: the hook's list is undefined while loading.
const maybeUsers = usePresence("doc-42", "alice", { interval: 5000, token: "t", idleAfter: 60_000 });
const names: string[] = (maybeUsers ?? []).map((user) => user.name ?? user.userId);
void presenceRoomFor("doc-42", "alice")?.update({ typing: false });
FacePile({ users: maybeUsers, className: "pile" });
console.log(names);
