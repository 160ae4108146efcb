/// What went wrong in a client call.
///
/// ```swift
/// do { try await room.update(data: ["typing": true]) }
/// catch let error as PresenceClientError where error.code == "not_found" { … }
/// ```
public struct PresenceClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The server's error code (PROTOCOL.md), or a client-side one: `not_connected`, `left`, `invalid_url`, `encoding_failed`.
    public let code: String
    public let message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    public static let notConnected = PresenceClientError(code: "not_connected", message: "the connection to the server is down; try again")
    public static let left = PresenceClientError(code: "left", message: "this room handle has left the room")
}
