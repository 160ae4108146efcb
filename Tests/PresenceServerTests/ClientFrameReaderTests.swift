import NIOCore
import NIOEmbedded
import NIOWebSocket
import PresenceTestSupport
import Testing

@testable import PresenceServer

/// The server reads a client's frames itself (`ClientFrameReader`): whole messages however the
/// bytes are split, control frames between fragments, and RFC 6455's refusals.
@Suite struct ClientFrameReaderTests {
    static let limit = 64 * 1024

    /// Everything `bytes` holds, fed in `chunks` reads; the failure, if any, ends it.
    static func read(_ bytes: [UInt8], chunks: [Int]? = nil, limit: Int = limit) -> (frames: [ClientFrameReader.Frame], failure: ClientFrameReader.Failure?) {
        var reader = ClientFrameReader(maxMessageBytes: limit)
        var frames: [ClientFrameReader.Frame] = []
        var offset = 0
        for size in (chunks ?? [bytes.count]) + [bytes.count] where offset < bytes.count {
            let end = min(bytes.count, offset + size)
            reader.append(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
            do {
                while let frame = try reader.next() { frames.append(frame) }
            } catch {
                return (frames, error)
            }
        }
        return (frames, nil)
    }

    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true) -> [UInt8] {
        RawWebSocket.clientFrame(opcode: opcode, payload: payload, fin: fin, mask: masked ? [0x37, 0xFA, 0x21, 0x3D] : nil)
    }

    static func text(_ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 % 94 + 33) }
    }

    @Test(arguments: [0, 1, 125, 126, 1_000, 65_535, 65_536])
    func aTextFrameReadsBackWholeInOneReadAndByteByByte(length: Int) {
        let message = Self.text(length)
        let bytes = Self.frame(1, message)
        #expect(Self.read(bytes).frames == [.text(message)])
        // Byte by byte only for the short ones: the long ones are the same code, slower.
        if length <= 1_000 {
            let split = Self.read(bytes, chunks: Array(repeating: 1, count: bytes.count))
            #expect(split.frames == [.text(message)] && split.failure == nil)
        }
    }

    @Test func framesOfOneReadComeOutInOrder() {
        let bytes = Self.frame(1, Array("one".utf8)) + Self.frame(9, Array("ping".utf8)) + Self.frame(2, [1, 2])
            + Self.frame(10, []) + Self.frame(1, Array("two".utf8)) + Self.frame(8, [0x03, 0xE8, 0x62, 0x79]) + Self.frame(8, [])
        #expect(
            Self.read(bytes).frames == [
                .text(Array("one".utf8)), .ping(ByteBuffer(string: "ping")), .binary, .pong, .text(Array("two".utf8)),
                .close(code: 1000), .close(code: nil),
            ])
        for code: UInt16 in [1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            #expect(Self.read(Self.frame(8, withUnsafeBytes(of: code.bigEndian, Array.init))).frames == [.close(code: code)])
        }
    }

    @Test func fragmentsAreJoinedAroundControlFrames() {
        let message = Self.text(300)
        let bytes = Self.frame(1, Array(message[..<10]), fin: false) + Self.frame(9, Array("p".utf8))
            + Self.frame(0, Array(message[10..<200]), fin: false) + Self.frame(0, Array(message[200...]))
            + Self.frame(2, [1], fin: false) + Self.frame(0, [2])
        let expected: [ClientFrameReader.Frame] = [.ping(ByteBuffer(string: "p")), .text(message), .binary]
        #expect(Self.read(bytes).frames == expected)
        #expect(Self.read(bytes, chunks: [3, 7, 1, 100, 2, 50]).frames == expected)
    }

    @Test func brokenFramesAreProtocolErrors() {
        let heartbeat = Array(RawWebSocket.heartbeat.utf8)
        let cases: [(String, [UInt8])] = [
            ("unmasked", Self.frame(1, heartbeat, masked: false)),
            ("reserved bits", [0xC1] + Self.frame(1, heartbeat).dropFirst()),
            ("unknown opcode", Self.frame(3, heartbeat)),
            ("fragmented ping", Self.frame(9, [1], fin: false)),
            ("long ping", Self.frame(9, Self.text(126))),
            ("stray continuation", Self.frame(0, heartbeat)),
            ("a message inside a message", Self.frame(1, [1], fin: false) + Self.frame(1, heartbeat)),
            ("64-bit length with its top bit", [0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1]),
            ("too many fragments", Self.frame(1, [], fin: false) + Array(repeating: Self.frame(0, [], fin: false), count: 1_024).flatMap { $0 }),
            ("a one-byte close", Self.frame(8, [0x03])),
            ("close code 1005", Self.frame(8, [0x03, 0xED])),
            ("close code 999", Self.frame(8, [0x03, 0xE7])),
            ("close code 2000", Self.frame(8, [0x07, 0xD0])),
            ("close code 5000", Self.frame(8, [0x13, 0x88])),
        ]
        for (name, bytes) in cases {
            let read = Self.read(bytes)
            guard case .protocolError = read.failure else {
                Issue.record("\(name): \(String(describing: read.failure))")
                continue
            }
            #expect(read.frames.isEmpty, "\(name)")
        }
        // 1,024 fragments are one message.
        let most = Self.frame(1, [65], fin: false) + Array(repeating: Self.frame(0, [66], fin: false), count: 1_022).flatMap { $0 } + Self.frame(0, [67])
        #expect(Self.read(most).frames == [.text([65] + Array(repeating: 66, count: 1_022) + [67])])
    }

    /// Over the limit is refused from the frame's header: the server never holds more than a message.
    @Test func oversizedMessagesAreRefusedFromTheirHeader() {
        let declared = Self.frame(1, Self.text(Self.limit + 1))
        #expect(Self.read(Array(declared.prefix(14))).failure == .tooBig)
        let fragments = Self.frame(1, Self.text(40_000), fin: false) + Self.frame(0, Self.text(30_000))
        #expect(Self.read(Array(fragments.prefix(40_020))).failure == .tooBig)
        #expect(Self.read(Self.frame(1, Self.text(100)), limit: 99).failure == .tooBig)
        #expect(Self.read(Self.frame(1, Self.text(99)), limit: 99).frames.count == 1)
    }

    @Test func aFailedReaderReadsNothingMore() throws {
        var reader = ClientFrameReader(maxMessageBytes: Self.limit)
        reader.append(ByteBuffer(bytes: Self.frame(1, [1], masked: false)))
        #expect(throws: ClientFrameReader.Failure.self) { try reader.next() }
        reader.append(ByteBuffer(bytes: Self.frame(1, Array("fine".utf8))))
        #expect(try reader.next() == nil)
    }

    /// Against NIO's frame decoder and fragment aggregator, which the reader replaced: random
    /// valid messages, fragmented at random with pings between fragments, fed in random reads,
    /// give the same messages and pings in the same order.
    @Test func readsWhatNIOsDecoderAndAggregatorRead() throws {
        var generator = SeededGenerator(seed: 6_455)
        for _ in 0..<200 {
            var bytes: [UInt8] = []
            for _ in 0..<(1 + generator.next() % 5) {
                let opcode: UInt8 = generator.next() % 4 == 0 ? 2 : 1
                let message = Self.text(Int(generator.next() % 3_000))
                var offset = 0
                var first = true
                repeat {
                    let size = min(message.count - offset, Int(generator.next() % 1_200))
                    let end = offset + size
                    bytes += Self.frame(first ? opcode : 0, Array(message[offset..<end]), fin: end == message.count)
                    if end < message.count, generator.next() % 3 == 0 {
                        bytes += Self.frame(9, Self.text(Int(generator.next() % 126)))
                    }
                    offset = end
                    first = false
                } while offset < message.count
            }
            var chunks: [Int] = []
            var total = 0
            while total < bytes.count {
                chunks.append(1 + Int(generator.next() % 700))
                total += chunks.last!
            }
            let ours = Self.read(bytes, chunks: chunks)
            #expect(ours.failure == nil)
            #expect(ours.frames == (try Self.readByNIO(bytes, chunks: chunks)))
        }
    }

    /// Whatever the bytes (valid streams with bytes flipped, dropped or cut short), the reader
    /// reads the same frames and fails the same way however the bytes are split into reads.
    @Test func anyBytesReadTheSameInOneReadOrMany() {
        var generator = SeededGenerator(seed: 1_002)
        var failures = 0
        for _ in 0..<2_000 {
            var bytes: [UInt8] = []
            for _ in 0..<(1 + generator.next() % 4) {
                let opcodes: [UInt8] = [0, 1, 1, 2, 8, 9, 10]
                let opcode = opcodes[Int(generator.next() % UInt64(opcodes.count))]
                bytes += Self.frame(opcode, Self.text(Int(generator.next() % 300)), fin: generator.next() % 4 != 0)
            }
            for _ in 0..<(generator.next() % 4) {
                let index = Int(generator.next() % UInt64(bytes.count))
                switch generator.next() % 3 {
                case 0: bytes[index] ^= UInt8(truncatingIfNeeded: 1 << (generator.next() % 8))
                case 1: bytes.remove(at: index)
                default: bytes.removeLast(bytes.count - index)
                }
                if bytes.isEmpty { bytes = [0x81] }
            }
            var chunks: [Int] = []
            var total = 0
            while total < bytes.count {
                chunks.append(1 + Int(generator.next() % 40))
                total += chunks.last!
            }
            let whole = Self.read(bytes, limit: 200)
            let split = Self.read(bytes, chunks: chunks, limit: 200)
            #expect(whole.frames == split.frames)
            #expect(whole.failure == split.failure)
            if whole.failure != nil { failures += 1 }
        }
        // The mutations must reach the refusals too, or this checks only the easy path.
        #expect(failures > 200)
    }

    static func readByNIO(_ bytes: [UInt8], chunks: [Int]) throws -> [ClientFrameReader.Frame] {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: limit)))
        try channel.pipeline.syncOperations.addHandler(
            NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1_024, maxAccumulatedFrameSize: limit))
        var offset = 0
        for size in chunks where offset < bytes.count {
            let end = min(bytes.count, offset + size)
            try channel.writeInbound(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
        }
        var frames: [ClientFrameReader.Frame] = []
        while let frame = try channel.readInbound(as: WebSocketFrame.self) {
            switch frame.opcode {
            case .text: frames.append(.text(Array(frame.unmaskedData.readableBytesView)))
            case .binary: frames.append(.binary)
            case .ping: frames.append(.ping(frame.unmaskedData))
            default: Issue.record("unexpected \(frame.opcode)")
            }
        }
        _ = try channel.finish()
        return frames
    }
}
