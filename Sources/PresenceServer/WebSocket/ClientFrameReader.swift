import NIOCore
import NIOWebSocket

/// Reads a client's frames from its socket's bytes as they come, and hands back whole messages
/// (unmasked, fragments joined) and control frames. One reader per socket, on its event loop.
///
/// It does in the socket's one handler what NIO's frame decoder, protocol error handler and
/// fragment aggregator do as channel handlers, each a pipeline step and a boxed frame per
/// message. Unmasking copies the payload once, straight into the array the JSON parser reads.
struct ClientFrameReader {
    enum Frame: Equatable {
        case text([UInt8])
        case binary
        case ping(ByteBuffer)
        case pong
        case close(code: UInt16?)
    }

    enum Failure: Error, Equatable {
        /// The peer broke RFC 6455; the socket is closed with 1002.
        case protocolError(String)
        /// A frame or a message over the limit; the socket is closed with 1009.
        case tooBig
        /// A text message or a close reason that is not UTF-8 (RFC 6455 §8.1); closed with 1007.
        case invalidUTF8
    }

    /// A message split into more frames than this is refused: a cap on per-frame work a peer
    /// could otherwise spread a message's bytes over.
    static let maxFragments = 1_024

    let maxMessageBytes: Int
    /// Bytes of a frame not yet whole. Empty (and holding no read buffer, which NIO then reuses)
    /// between frames.
    private var pending = Self.empty
    private static let empty = ByteBuffer()
    /// The message whose first fragments have come, and whether it is text.
    private var fragments: (text: Bool, payload: [UInt8], count: Int)?
    /// Once failed, the reader reads nothing more.
    private var failed = false

    init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    /// Takes the bytes of one read.
    mutating func append(_ bytes: ByteBuffer) {
        if pending.readableBytes == 0 {
            pending = bytes
        } else {
            var bytes = bytes
            pending.writeBuffer(&bytes)
        }
    }

    /// The next whole frame or message; nil until more bytes come.
    mutating func next() throws(Failure) -> Frame? {
        guard !failed else { return nil }
        do {
            while let frame = try nextFrame() {
                if let whole = try assemble(frame) { return whole }
            }
            releaseEmptyBuffer()
            return nil
        } catch {
            failed = true
            pending = Self.empty
            fragments = nil
            throw error
        }
    }

    private struct RawFrame {
        let fin: Bool
        let opcode: WebSocketOpcode
        let payload: [UInt8]
    }

    /// One frame off `pending`, unmasked, when all of it is there.
    private mutating func nextFrame() throws(Failure) -> RawFrame? {
        let start = pending.readerIndex
        guard let first = pending.getInteger(at: start, as: UInt8.self),
            let second = pending.getInteger(at: start + 1, as: UInt8.self)
        else { return nil }
        let fin = first & 0x80 != 0
        // A nibble: always an opcode, if perhaps one RFC 6455 leaves reserved.
        let opcode = WebSocketOpcode(encodedWebSocketOpcode: first & 0x0F)!
        // No extension is ever negotiated, so its bits must stay clear (§5.2).
        guard first & 0x70 == 0 else { throw .protocolError("reserved bits set") }
        guard second & 0x80 != 0 else { throw .protocolError("frames from a client must be masked") }
        switch opcode {
        case .continuation, .text, .binary, .connectionClose, .ping, .pong:
            break
        default:
            throw .protocolError("unknown opcode \(first & 0x0F)")
        }
        var headerLength = 2
        let length: UInt64
        switch second & 0x7F {
        case 126:
            guard let extended = pending.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = UInt64(extended)
            headerLength += 2
        case 127:
            guard let extended = pending.getInteger(at: start + 2, as: UInt64.self) else { return nil }
            guard extended & (1 << 63) == 0 else { throw .protocolError("frame length out of range") }
            length = extended
            headerLength += 8
        case let short:
            length = UInt64(short)
        }
        if opcode.isControlOpcode {
            // §5.5: control frames are whole and short.
            guard fin else { throw .protocolError("fragmented control frame") }
            guard length <= 125 else { throw .protocolError("control frame over 125 bytes") }
        } else {
            // Refused from its header: a peer cannot make the server hold more than a message.
            let sofar = UInt64(fragments?.payload.count ?? 0)
            guard length <= UInt64(maxMessageBytes) - min(sofar, UInt64(maxMessageBytes)) else { throw .tooBig }
        }
        let payloadLength = Int(length)
        guard pending.readableBytes >= headerLength + 4 + payloadLength else { return nil }
        // Big-endian: the key's first byte is the word's highest.
        let mask = pending.getInteger(at: start + headerLength, as: UInt32.self)!
        let payload = pending.withUnsafeReadableBytes { raw in
            let masked = raw[(headerLength + 4)..<(headerLength + 4 + payloadLength)]
            return [UInt8](unsafeUninitializedCapacity: payloadLength) { unmasked, count in
                var offset = 0
                for byte in masked {
                    unmasked[offset] = byte ^ UInt8(truncatingIfNeeded: mask >> (24 - 8 * UInt32(offset & 3)))
                    offset += 1
                }
                count = payloadLength
            }
        }
        pending.moveReaderIndex(forwardBy: headerLength + 4 + payloadLength)
        return RawFrame(fin: fin, opcode: opcode, payload: payload)
    }

    /// A frame as what it means: control frames as they are, data frames once their message is whole.
    private mutating func assemble(_ frame: RawFrame) throws(Failure) -> Frame? {
        switch frame.opcode {
        case .connectionClose:
            guard frame.payload.count != 1 else { throw .protocolError("a close frame's code is two bytes") }
            guard frame.payload.count >= 2 else { return .close(code: nil) }
            let code = UInt16(frame.payload[0]) << 8 | UInt16(frame.payload[1])
            // The server echoes the code, and may not send one that no peer may (§7.4).
            guard CloseCode.peerMaySend(code) else { throw .protocolError("close code \(code) may not be sent") }
            guard Self.isUTF8(frame.payload.dropFirst(2)) else { throw .invalidUTF8 }
            return .close(code: code)
        case .ping:
            return .ping(ByteBuffer(bytes: frame.payload))
        case .pong:
            return .pong
        case .continuation:
            guard var message = fragments else { throw .protocolError("a continuation frame continues nothing") }
            fragments = nil
            message.count += 1
            guard message.count <= Self.maxFragments else { throw .protocolError("too many fragments") }
            message.payload += frame.payload
            guard frame.fin else {
                fragments = message
                return nil
            }
            return try Self.whole(text: message.text, message.payload)
        default:
            guard fragments == nil else { throw .protocolError("a new message began inside a fragmented one") }
            let text = frame.opcode == .text
            guard frame.fin else {
                fragments = (text, frame.payload, 1)
                return nil
            }
            return try Self.whole(text: text, frame.payload)
        }
    }

    private static func whole(text: Bool, _ payload: [UInt8]) throws(Failure) -> Frame {
        guard text else { return .binary }
        guard isUTF8(payload) else { throw .invalidUTF8 }
        return .text(payload)
    }

    /// Whether `bytes` are UTF-8: no overlong forms, surrogates or code points past U+10FFFF.
    static func isUTF8(_ bytes: some Collection<UInt8>) -> Bool {
        // Nearly every message is ASCII: one pass over the bytes answers it.
        if bytes.allSatisfy({ $0 < 0x80 }) { return true }
        let failed = transcode(bytes.makeIterator(), from: UTF8.self, to: UTF32.self, stoppingOnError: true) { _ in }
        return !failed
    }

    /// NIO reuses a read's buffer only when nothing else holds it.
    private mutating func releaseEmptyBuffer() {
        if pending.readableBytes == 0 { pending = Self.empty }
    }
}
