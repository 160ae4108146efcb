/// A room whose records changed (or that was removed), published after the change is stored.
public struct RoomChange: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case updated
        case removed
        /// The room got a new token; `roomToken` is the old one, whose subscriptions end.
        case tokenRotated
    }
    public var roomId: String
    public var roomToken: String
    public var roomVersion: UInt64
    public var kind: Kind

    public init(roomId: String, roomToken: String, roomVersion: UInt64, kind: Kind) {
        self.roomId = roomId
        self.roomToken = roomToken
        self.roomVersion = roomVersion
        self.kind = kind
    }
}
