/// The limits of PROTOCOL.md, in one place.
public enum ProtocolLimits {
    public static let maxIdentifierBytes = 256
    public static let intervalRange: ClosedRange<Int64> = 1_000...300_000
    public static let defaultInterval: Int64 = 10_000
    public static let limitRange: ClosedRange<Int> = 1...1_000
    public static let defaultLimit = 104
    public static let maxDataBytes = 4 * 1024
    public static let maxNameBytes = 256
    public static let maxImageBytes = 2 * 1024
    public static let maxBodyBytes = 64 * 1024
    /// A session expires this many intervals after its last heartbeat.
    public static let timeoutFactorTimesTwo: Int64 = 5

    /// The deadline of a session that heartbeats at `now` with `interval`: 2.5 × interval later.
    public static func deadline(now: Int64, interval: Int64) -> Int64 {
        now + interval * timeoutFactorTimesTwo / 2
    }
}

public enum Validate {
    /// Unicode's control characters (category Cc) are exactly U+0000–U+001F and U+007F–U+009F,
    /// a fixed set by Unicode's stability policy, so a range check does what a property lookup
    /// per scalar did, at a fraction of the cost on every heartbeat.
    static func hasControlCharacters(_ string: String) -> Bool {
        string.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }
    }

    /// `roomId`, `userId`, `sessionId`: 1 to 256 UTF-8 bytes, no control characters.
    public static func identifier(_ value: String, field: String) throws(PresenceError) {
        let bytes = value.utf8.count
        guard bytes >= 1, bytes <= ProtocolLimits.maxIdentifierBytes else {
            throw .invalidArgument("\(field) must be 1 to \(ProtocolLimits.maxIdentifierBytes) UTF-8 bytes, got \(bytes)")
        }
        guard !hasControlCharacters(value) else {
            throw .invalidArgument("\(field) must not contain control characters")
        }
    }

    public static func interval(_ value: Int64?) throws(PresenceError) -> Int64 {
        guard let value else { return ProtocolLimits.defaultInterval }
        guard ProtocolLimits.intervalRange.contains(value) else {
            throw .invalidArgument(
                "interval must be between \(ProtocolLimits.intervalRange.lowerBound) and \(ProtocolLimits.intervalRange.upperBound) milliseconds, got \(value)")
        }
        return value
    }

    public static func limit(_ value: Int?) throws(PresenceError) -> Int {
        guard let value else { return ProtocolLimits.defaultLimit }
        guard ProtocolLimits.limitRange.contains(value) else {
            throw .invalidArgument("limit must be between \(ProtocolLimits.limitRange.lowerBound) and \(ProtocolLimits.limitRange.upperBound), got \(value)")
        }
        return value
    }

    /// `data` of at most 4 KiB as compact JSON; `null` means "clear" and becomes `nil`.
    public static func data(_ value: JSONValue) throws(PresenceError) -> JSONValue? {
        if value == .null { return nil }
        let size = value.compactJSON.utf8.count
        guard size <= ProtocolLimits.maxDataBytes else {
            throw .dataTooLarge("data must be at most \(ProtocolLimits.maxDataBytes) bytes as compact JSON, got \(size)")
        }
        return value
    }

    public static func name(_ value: String?) throws(PresenceError) {
        guard let value else { return }
        guard value.utf8.count <= ProtocolLimits.maxNameBytes else {
            throw .invalidArgument("name must be at most \(ProtocolLimits.maxNameBytes) UTF-8 bytes")
        }
        guard !hasControlCharacters(value) else {
            throw .invalidArgument("name must not contain control characters")
        }
    }

    public static func image(_ value: String?) throws(PresenceError) {
        guard let value else { return }
        guard value.utf8.count <= ProtocolLimits.maxImageBytes else {
            throw .invalidArgument("image must be a URL of at most \(ProtocolLimits.maxImageBytes) bytes")
        }
        let lower = value.lowercased()
        let scheme = lower.hasPrefix("https://") ? "https://" : (lower.hasPrefix("http://") ? "http://" : nil)
        guard let scheme, value.utf8.count > scheme.utf8.count,
            !hasControlCharacters(value), !value.contains(" ")
        else {
            throw .invalidArgument("image must be an http: or https: URL")
        }
    }
}
