import NIOCore
import NIOWebSocket

/// RFC 6455 framing, both ways: what the server sends (a server never masks, §5.1), and
/// `ClientFrameReader` for what a client sends.
enum WebSocketWire {
    /// One final text frame: header, then the message.
    static func textFrame(_ message: ByteBuffer) -> ByteBuffer {
        frame(opcode: .text, message)
    }

    /// One final frame of `opcode` carrying `payload`.
    static func frame(opcode: WebSocketOpcode, _ payload: ByteBuffer) -> ByteBuffer {
        let length = payload.readableBytes
        var frame = ByteBuffer()
        frame.reserveCapacity(length + 10)
        frame.writeInteger(0x80 | UInt8(webSocketOpcode: opcode))
        switch length {
        case ..<126:
            frame.writeInteger(UInt8(length))
        case ..<65_536:
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(length))
        default:
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(length))
        }
        var payload = payload
        frame.writeBuffer(&payload)
        return frame
    }

    /// A close frame's payload: the code, then at most 123 bytes of reason (a control frame's
    /// payload is at most 125 bytes). No code, no payload.
    static func closePayload(code: UInt16?, reason: String) -> ByteBuffer {
        var payload = ByteBuffer()
        guard let code else { return payload }
        payload.writeInteger(code)
        payload.writeString(String(decoding: reason.utf8.prefix(123), as: UTF8.self))
        return payload
    }
}
