import Foundation
import PresenceCore

/// A JSON object from a request body or WebSocket message, with typed field
/// access whose errors name the field: one parser for HTTP and WebSocket.
struct JSONObject: Sendable {
    let fields: [String: JSONValue]

    init(parsing bytes: some Collection<UInt8>) throws(PresenceError) {
        let value = try Self.parseValue(bytes)
        guard case .object(let fields) = value else {
            throw .invalidArgument("expected a JSON object")
        }
        self.fields = fields
    }

    static func parseValue(_ bytes: some Collection<UInt8>) throws(PresenceError) -> JSONValue {
        do {
            return try JSONParser.parse(bytes)
        } catch {
            throw .invalidJSON("the body is not valid JSON (\(error.reason) at byte \(error.offset))")
        }
    }

    func optionalString(_ name: String) throws(PresenceError) -> String? {
        switch fields[name] {
        case .none, .some(.null): return nil
        case .some(.string(let value)): return value
        case .some: throw .invalidArgument("\(name) must be a string")
        }
    }

    func string(_ name: String) throws(PresenceError) -> String {
        guard let value = try optionalString(name) else { throw .invalidArgument("\(name) is required") }
        return value
    }

    func optionalInteger(_ name: String) throws(PresenceError) -> Int64? {
        switch fields[name] {
        case .none, .some(.null): return nil
        case .some(.integer(let value)): return value
        case .some(.double(let value)) where value.rounded() == value && abs(value) < 1e15: return Int64(value)
        case .some: throw .invalidArgument("\(name) must be an integer")
        }
    }

    /// `data` must be present (use null to clear); returns the value to store, `nil` meaning "clear".
    func data() throws(PresenceError) -> JSONValue? {
        guard let value = fields["data"] else {
            throw .invalidArgument("data is required (send null to clear it)")
        }
        return try Validate.data(value)
    }

    func heartbeatRequest() throws(PresenceError) -> HeartbeatRequest {
        try HeartbeatRequest(
            roomId: string("roomId"), userId: string("userId"), sessionId: string("sessionId"),
            interval: optionalInteger("interval"), name: optionalString("name"), image: optionalString("image"))
    }
}

/// Parsing of query parameters shared by the list calls.
enum QueryParsing {
    static func limit(_ raw: String?) throws(PresenceError) -> Int {
        guard let raw else { return Limits.defaultLimit }
        guard let value = Int(raw) else { throw .invalidArgument("limit must be an integer") }
        return try Validate.limit(value)
    }

    static func flag(_ raw: String?, name: String) throws(PresenceError) -> Bool {
        switch raw {
        case nil, "false", "0": return false
        case "true", "1", "": return true
        default: throw .invalidArgument("\(name) must be true or false")
        }
    }

    /// Path segments arrive percent-encoded; decode and validate them as identifiers.
    static func identifier(_ raw: String?, field: String) throws(PresenceError) -> String {
        guard let raw, let decoded = raw.removingPercentEncoding else {
            throw .invalidArgument("\(field) is not a valid percent-encoded path segment")
        }
        try Validate.identifier(decoded, field: field)
        return decoded
    }
}
