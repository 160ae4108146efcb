import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import PresenceCore

/// One libFuzzer input as what a client sends first: a request line and headers, read by NIO's
/// HTTP/1 parser as the server reads them, then the server's own checks of what came through:
/// the WebSocket handshake (RFC 6455 §4.2.1), the forwarding headers a trusted proxy sets and the
/// `Origin`. Any crash is a bug; so is a handshake accepted that RFC 6455 refuses, an address that
/// is not in its one spelling, or an origin that does not read back as itself.
func fuzzRequestHead(_ bytes: [UInt8]) {
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
    defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
    // A request the parser refuses is answered with 400 by the server (MalformedRequestHandler).
    _ = try? channel.writeInbound(channel.allocator.buffer(bytes: bytes))
    while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
        if case .head(let head) = part { check(head) }
    }
}

private func check(_ head: HTTPRequestHead) {
    let values: (String) -> [String] = { head.headers[$0] }
    do throws(PresenceError) {
        try WebSocketHandshake.check(method: head.method.rawValue, httpVersion: (head.version.major, head.version.minor), header: values)
        precondition(head.method == .GET, "a handshake accepted with \(head.method)")
        precondition(head.version.major > 1 || head.version.minor >= 1, "a handshake accepted over \(head.version)")
        let keys = values("sec-websocket-key")
        precondition(keys.count == 1, "a handshake accepted with \(keys.count) keys")
        let key = keys[0].trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        precondition(Data(base64Encoded: key)?.count == 16, "a handshake accepted with the key \(key)")
        precondition(values("sec-websocket-version").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " \t")) } == ["13"])
    } catch {
        precondition([400, 405, 426].contains(error.status), "a handshake refused with \(error.status)")
    }
    for header in ForwardingHeader.allCases {
        for case let address? in header.chain(values(header.rawValue)) {
            precondition(IPAddress.canonical(address) == address, "\(address) is not in its one spelling")
        }
    }
    for origin in values("origin") {
        if let parsed = WebOrigin(origin) {
            precondition(WebOrigin(parsed.serialized) == parsed, "the origin \(origin) does not read back as itself")
        }
    }
}
