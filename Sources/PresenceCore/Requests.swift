/// Decoding of every request a client sends, over HTTP or WebSocket, from raw bytes into
/// validated values. This is the server's whole attack surface for untrusted input, kept
/// free of any transport so that one fuzz target covers it (`Fuzz/`).

/// A JSON object from a request body or WebSocket message, with typed field
/// access whose errors name the field.
public struct JSONObject: Sendable {
    /// In the document's order; a few fields, so a look-up is a short scan, with no hashing.
    private let members: [(name: String, value: JSONValue)]

    @inlinable
    public init(parsing bytes: some Collection<UInt8>) throws(PresenceError) {
        try self.init(parsing: Array(bytes))
    }

    public init(parsing bytes: [UInt8]) throws(PresenceError) {
        let members: [(name: String, value: JSONValue)]?
        do {
            members = try JSONParser.parseMembers(array: bytes)
        } catch {
            throw Self.invalid(error)
        }
        guard let members else { throw .invalidArgument("expected a JSON object") }
        self.members = members
    }

    /// A field's value; of a name given twice, the last (as JSON parsers commonly do).
    public subscript(_ name: String) -> JSONValue? {
        members.last { $0.name == name }?.value
    }

    @inlinable
    public static func parseValue(_ bytes: some Collection<UInt8>) throws(PresenceError) -> JSONValue {
        try parseValue(Array(bytes))
    }

    public static func parseValue(_ bytes: [UInt8]) throws(PresenceError) -> JSONValue {
        do {
            return try JSONParser.parse(array: bytes)
        } catch {
            throw invalid(error)
        }
    }

    private static func invalid(_ error: JSONParser.SyntaxError) -> PresenceError {
        .invalidJSON("the body is not valid JSON (\(error.reason) at byte \(error.offset))")
    }

    public func optionalString(_ name: String) throws(PresenceError) -> String? {
        switch self[name] {
        case .none, .some(.null): return nil
        case .some(.string(let value)): return value
        case .some: throw .invalidArgument("\(name) must be a string")
        }
    }

    public func string(_ name: String) throws(PresenceError) -> String {
        guard let value = try optionalString(name) else { throw .invalidArgument("\(name) is required") }
        return value
    }

    public func optionalBool(_ name: String) throws(PresenceError) -> Bool? {
        switch self[name] {
        case .none, .some(.null): return nil
        case .some(.bool(let value)): return value
        case .some: throw .invalidArgument("\(name) must be true or false")
        }
    }

    public func optionalInteger(_ name: String) throws(PresenceError) -> Int64? {
        switch self[name] {
        case .none, .some(.null): return nil
        case .some(.integer(let value)): return value
        case .some(.double(let value)) where value.rounded() == value && abs(value) < 1e15: return Int64(value)
        case .some: throw .invalidArgument("\(name) must be an integer")
        }
    }

    /// `data` must be present (use null to clear); returns the value to store, `nil` meaning "clear".
    public func data() throws(PresenceError) -> JSONValue? {
        guard let value = self["data"] else {
            throw .invalidArgument("data is required (send null to clear it)")
        }
        return try Validate.data(value)
    }
}

extension HeartbeatRequest {
    /// The fields of a heartbeat body or message.
    public init(json object: JSONObject) throws(PresenceError) {
        try self.init(
            roomId: object.string("roomId"), userId: object.string("userId"), sessionId: object.string("sessionId"),
            interval: object.optionalInteger("interval"), name: object.optionalString("name"),
            image: object.optionalString("image"), away: object.optionalBool("away"))
    }
}

/// `update`: set (or with `nil` clear) the data of the session's user.
public struct UpdateRequest: Sendable, Hashable {
    public let sessionToken: String
    public let data: JSONValue?

    public init(json object: JSONObject) throws(PresenceError) {
        sessionToken = try object.string("sessionToken")
        data = try object.data()
    }
}

/// `list` and `subscribe`: a room's list by its token, cut at `limit` users.
public struct ListRequest: Sendable, Hashable {
    public let roomToken: String
    public let limit: Int

    public init(roomToken: String, limit: Int? = nil) throws(PresenceError) {
        self.roomToken = roomToken
        self.limit = try Validate.limit(limit)
    }
}

/// The body of `POST /api/disconnect`.
public enum DisconnectBody {
    /// `navigator.sendBeacon` sends `text/plain`: accept a JSON object, or the bare token.
    public static func sessionToken(from body: [UInt8], contentType: String?) throws(PresenceError) -> String {
        let text = String(decoding: body, as: UTF8.self).trimmingWhitespace()
        if text.hasPrefix("{") || (contentType?.lowercased() ?? "").hasPrefix("application/json") {
            return try JSONObject(parsing: body).string("sessionToken")
        }
        guard !text.isEmpty, text.utf8.count <= 1024, !text.contains(where: \.isWhitespace) else {
            throw .invalidArgument("the body must be {\"sessionToken\": …} or the bare session token")
        }
        return text
    }
}

extension String {
    /// Without leading and trailing white space (Unicode's White_Space, as Foundation's trimming).
    func trimmingWhitespace() -> String {
        guard let first = firstIndex(where: { !$0.isWhitespace }), let last = lastIndex(where: { !$0.isWhitespace }) else {
            return ""
        }
        return String(self[first...last])
    }
}

/// A WebSocket message from a client (PROTOCOL.md, "WebSocket API").
public struct SocketRequest: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case auth(token: String)
        case heartbeat(HeartbeatRequest)
        case subscribe(ListRequest)
        case unsubscribe(roomToken: String)
        case update(UpdateRequest)
        case disconnect(sessionToken: String)
        case watchUsers(UserIdsRequest)
        case unwatchUsers(UserIdsRequest)
    }

    /// Echoed in the reply: a number or a string.
    public let id: JSONValue?
    public let kind: Kind

    public init(id: JSONValue?, kind: Kind) {
        self.id = id
        self.kind = kind
    }

    /// A message that could not be decoded, with the request id when the message had a valid one,
    /// so the error reply can still be matched to its request.
    public struct DecodingError: Error, Sendable {
        public let id: JSONValue?
        public let error: PresenceError
    }

    @inlinable
    public static func decode(_ bytes: some Collection<UInt8>) throws(DecodingError) -> SocketRequest {
        try decode(Array(bytes))
    }

    public static func decode(_ bytes: [UInt8]) throws(DecodingError) -> SocketRequest {
        let message: JSONObject
        do {
            message = try JSONObject(parsing: bytes)
        } catch {
            throw DecodingError(id: nil, error: error)
        }
        let id = message["id"]
        switch id {
        case nil, .string?, .integer?, .double?: break
        default: throw DecodingError(id: nil, error: .invalidArgument("id must be a number or a string"))
        }
        do {
            return SocketRequest(id: id, kind: try kind(of: message))
        } catch {
            throw DecodingError(id: id, error: error)
        }
    }

    private static func kind(of message: JSONObject) throws(PresenceError) -> Kind {
        switch try message.string("type") {
        case "auth": return .auth(token: try message.string("token"))
        case "heartbeat": return .heartbeat(try HeartbeatRequest(json: message))
        case "subscribe":
            let limit = try message.optionalInteger("limit").map { Int(clamping: $0) }
            return .subscribe(try ListRequest(roomToken: message.string("roomToken"), limit: limit))
        case "unsubscribe": return .unsubscribe(roomToken: try message.string("roomToken"))
        case "update": return .update(try UpdateRequest(json: message))
        case "disconnect": return .disconnect(sessionToken: try message.string("sessionToken"))
        case "watchUsers": return .watchUsers(try UserIdsRequest(json: message))
        case "unwatchUsers": return .unwatchUsers(try UserIdsRequest(json: message))
        case let other: throw .invalidArgument("unknown message type \"\(other.prefix(64))\"")
        }
    }
}

/// Query parameters and path segments of the HTTP calls.
public enum QueryParsing {
    public static func limit(_ raw: String?) throws(PresenceError) -> Int {
        guard let raw else { return ProtocolLimits.defaultLimit }
        guard let value = Int(raw) else { throw .invalidArgument("limit must be an integer") }
        return try Validate.limit(value)
    }

    public static func flag(_ raw: String?, name: String) throws(PresenceError) -> Bool {
        switch raw {
        case nil, "false", "0": return false
        case "true", "1", "": return true
        default: throw .invalidArgument("\(name) must be true or false")
        }
    }

    /// Path segments arrive percent-encoded; decode and validate them as identifiers.
    public static func identifier(_ raw: String?, field: String) throws(PresenceError) -> String {
        guard let raw, let decoded = percentDecoded(raw) else {
            throw .invalidArgument("\(field) is not a valid percent-encoded path segment")
        }
        try Validate.identifier(decoded, field: field)
        return decoded
    }

    /// RFC 3986 percent-decoding; nil for a malformed escape or bytes that are not UTF-8.
    static func percentDecoded(_ raw: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(raw.utf8.count)
        var iterator = raw.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
