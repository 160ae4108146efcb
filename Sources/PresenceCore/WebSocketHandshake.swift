/// What RFC 6455 §4.2.1 asks of a client's opening handshake, checked before the server answers
/// it: each failure is an error with the status the server answers with (405 for another method,
/// 426 for another version, which the server answers with the version it speaks, 400 otherwise).
public enum WebSocketHandshake {
    /// Whether the `Upgrade` header's values ask for a WebSocket.
    public static func isAsked(upgrade values: some Sequence<String>) -> Bool {
        values.contains { $0.split(separator: ",").contains { $0.trimmingSpaces.lowercased() == "websocket" } }
    }

    /// - Parameter header: every value of a header, by its name in lowercase.
    public static func check(
        method: String, httpVersion: (major: Int, minor: Int), header: (String) -> [String]
    ) throws(PresenceError) {
        guard method == "GET" else { throw .methodNotAllowed("a WebSocket handshake is a GET request, not \(method)") }
        guard httpVersion.major > 1 || (httpVersion.major == 1 && httpVersion.minor >= 1) else {
            throw .invalidArgument("a WebSocket handshake needs HTTP/1.1")
        }
        guard header("connection").contains(where: { $0.split(separator: ",").contains { $0.trimmingSpaces.lowercased() == "upgrade" } })
        else {
            throw .invalidArgument("a WebSocket handshake needs Connection: Upgrade")
        }
        // §4.4: a version the server does not speak is answered with 426 and the one it does.
        guard header("sec-websocket-version").map({ $0.trimmingSpaces }) == ["13"] else {
            throw PresenceError(status: 426, code: "invalid_argument", message: "this server speaks WebSocket version 13 only")
        }
        let keys = header("sec-websocket-key")
        guard keys.count == 1, isSixteenBytesOfBase64(keys[0].trimmingSpaces) else {
            throw .invalidArgument("Sec-WebSocket-Key must be one base64-encoded 16-byte value")
        }
    }

    /// 16 bytes in base64: 22 characters of its alphabet, the last one's low bits zero, and `==`.
    static func isSixteenBytesOfBase64(_ key: Substring) -> Bool {
        let bytes = Array(key.utf8)
        guard bytes.count == 24, bytes[22] == UInt8(ascii: "="), bytes[23] == UInt8(ascii: "=") else { return false }
        func value(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): 62
            case UInt8(ascii: "/"): 63
            default: nil
            }
        }
        let values = bytes[0..<22].map(value)
        guard values.allSatisfy({ $0 != nil }) else { return false }
        // The 22nd character carries 2 bits of the 16th byte and 4 bits of padding.
        return values[21]! & 0x0F == 0
    }
}
