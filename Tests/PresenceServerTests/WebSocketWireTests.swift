import NIOCore
import Testing
@testable import PresenceServer

/// The server frames each diff once for all its subscribers; clients must read every length class.
@Suite struct WebSocketWireTests {
    @Test(arguments: [0, 1, 125, 126, 65_535, 65_536, 70_000])
    func aFramedMessageReadsBackWhole(length: Int) {
        let message = ByteBuffer(bytes: (0..<length).map { UInt8(truncatingIfNeeded: $0 % 94 + 33) })
        let frame = WebSocketWire.textFrame(message)
        let bytes = Array(frame.readableBytesView)
        #expect(bytes[0] == 0x81, "final text frame")
        #expect(bytes[1] & 0x80 == 0, "a server never masks")
        let frames = RawWebSocket.frames(in: bytes)
        #expect(frames.count == 1)
        #expect(frames.first?.opcode == 1)
        #expect(frames.first?.payload == Array(message.readableBytesView))
        // Nothing beyond the one frame.
        let header = length < 126 ? 2 : length < 65_536 ? 4 : 10
        #expect(bytes.count == header + length)
    }
}
