import Foundation
import NIOCore

/// Centrifuge (Go), the server issue 13 measured this one against, as `run fanout --centrifuge`
/// starts it: `scripts/bench/centrifuge/main.go`, built from Debian's packages by
/// `scripts/bench/centrifuge.sh`. Its JSON protocol: commands with an `id` and a numeric
/// `method`, replies with that `id`, pushes without one, several messages to a frame a line each.
enum Centrifuge {
    static let dialect = WebSocketDialect(
        path: "/connection/websocket",
        messages: { frame in
            var frame = frame
            var messages: [ByteBuffer] = []
            while let end = frame.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                let length = end - frame.readerIndex
                if length > 0 { messages.append(frame.readSlice(length: length)!) }
                frame.moveReaderIndex(forwardBy: 1)
            }
            if frame.readableBytes > 0 { messages.append(frame) }
            return messages
        },
        isPush: { !$0.readableBytesView.starts(with: #"{"id":"#.utf8) })

    /// Connects the protocol on `socket`; a client named "joiner" has join and leave messages on.
    static func connect(_ socket: WebSocketLoadConnection, name: String? = nil) async throws {
        try check(await socket.request(#"{"id":1,"params":{\#(name.map { #""name":"\#($0)""# } ?? "")}}"#), "connect")
    }

    static func subscribe(_ socket: WebSocketLoadConnection, to channel: String, id: Int) async throws {
        try check(await socket.request(#"{"id":\#(id),"method":1,"params":{"channel":"\#(channel)"}}"#), "subscribe")
    }

    static func unsubscribe(_ socket: WebSocketLoadConnection, from channel: String, id: Int) async throws {
        try check(await socket.request(#"{"id":\#(id),"method":2,"params":{"channel":"\#(channel)"}}"#), "unsubscribe")
    }

    /// 1 for a join or leave message, 0 for anything else.
    static func joinsAndLeaves(in message: ByteBuffer) -> Int {
        let view = message.readableBytesView
        return view.starts(with: #"{"result":{"type":1,"#.utf8) || view.starts(with: #"{"result":{"type":2,"#.utf8) ? 1 : 0
    }

    private static func check(_ reply: ByteBuffer, _ command: String) throws {
        let text = String(buffer: reply)
        guard !text.contains(#""error":"#) else { throw BenchmarkError("Centrifuge refused \(command): \(text)") }
    }
}
