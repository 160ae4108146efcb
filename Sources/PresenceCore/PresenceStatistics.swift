/// Counts for metrics and health.
public struct PresenceStatistics: Sendable, Hashable {
    public var rooms: Int
    public var sessions: Int
    public var onlineUsers: Int
    public var userRecords: Int
    /// The newest event's number: how many events were ever written (by every process sharing the store).
    public var lastEventSequence: UInt64

    public init(rooms: Int, sessions: Int, onlineUsers: Int, userRecords: Int, lastEventSequence: UInt64 = 0) {
        self.rooms = rooms
        self.sessions = sessions
        self.onlineUsers = onlineUsers
        self.userRecords = userRecords
        self.lastEventSequence = lastEventSequence
    }
}
