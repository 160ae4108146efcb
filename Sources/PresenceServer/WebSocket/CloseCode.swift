import NIOCore
import NIOWebSocket

/// Close codes PROTOCOL.md gives the server (and RFC 6455's that it uses).
enum CloseCode {
    static let normal: UInt16 = 1000
    static let protocolError: UInt16 = 1002
    static let invalidPayload: UInt16 = 1007
    static let policyViolation: UInt16 = 1008
    static let messageTooBig: UInt16 = 1009
    static let tryAgainLater: UInt16 = 1013

    /// RFC 6455 §7.4's codes with a meaning on the wire, IANA's registered ones, and those for
    /// libraries and applications (3000–4999); not 1004–1006 or 1015, which say what no frame carried.
    static func peerMaySend(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }
}
