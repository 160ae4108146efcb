import PresenceTestSupport
@testable import PresenceCore

/// The heartbeat and reads the state-machine tests share.
func beat(
    _ state: inout PresenceState, room: String = "room", user: String = "alice", session: String,
    interval: Int64 = 10_000, at now: Int64, name: String? = nil, image: String? = nil, away: Bool? = nil
) throws(PresenceError) -> PresenceState.HeartbeatOutcome {
    try state.heartbeat(
        HeartbeatRequest(roomId: room, userId: user, sessionId: session, interval: interval, name: name, image: image, away: away),
        now: now)
}

func users(_ state: PresenceState, room: String = "room") -> [UserRecord] {
    state.roomUsers(roomId: room, onlineOnly: false, limit: 1_000).users
}

func version(_ state: PresenceState, room: String = "room") -> UInt64 {
    state.roomUsers(roomId: room, onlineOnly: false, limit: 1).roomVersion
}
