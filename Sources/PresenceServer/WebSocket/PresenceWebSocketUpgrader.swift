import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import PresenceCore

/// The handshake is NIO's (`NIOTypedWebSocketServerUpgrader` writes the accept key); the upgraded
/// channel is this server's: one `PresenceSocketHandler` reads the frames itself, where NIO's
/// upgrader adds its frame decoder, encoder and error handler.
///
/// `shouldUpgrade` (the endpoint's admission, which checks the handshake against RFC 6455 and
/// answers what is wrong) runs first: NIO's upgrader checks the key and the version before asking
/// it, and drops a connection whose handshake fails them, unanswered.
struct PresenceWebSocketUpgrader: NIOTypedHTTPServerProtocolUpgrader {
    typealias UpgradeResult = PresenceChannel.Negotiated

    private let handshake: NIOTypedWebSocketServerUpgrader<UpgradeResult>
    private let shouldUpgrade: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>
    private let open: @Sendable (any Channel) throws -> Void

    /// `shouldUpgrade` decides, nil refusing; `open` sets up the upgraded channel, on its event loop.
    init(
        shouldUpgrade: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>,
        open: @escaping @Sendable (any Channel) throws -> Void
    ) {
        handshake = NIOTypedWebSocketServerUpgrader(
            shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
            upgradePipelineHandler: { channel, _ in channel.eventLoop.makeSucceededFuture(.webSocket) })
        self.shouldUpgrade = shouldUpgrade
        self.open = open
    }

    var supportedProtocol: String { handshake.supportedProtocol }
    /// None: the admission checks the handshake's headers and answers what is wrong (with NIO's
    /// list, a request without them went on as plain HTTP).
    var requiredUpgradeHeaders: [String] { [] }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders)
        -> EventLoopFuture<HTTPHeaders>
    {
        shouldUpgrade(channel, upgradeRequest).flatMap { (extraHeaders: HTTPHeaders?) -> EventLoopFuture<HTTPHeaders> in
            guard let extraHeaders else {
                // What NIO's upgrader fails with when refused: the connection goes on as HTTP, which answers the refusal.
                return channel.eventLoop.makeFailedFuture(NIOWebSocketUpgradeError.unsupportedWebSocketTarget)
            }
            var headers = initialResponseHeaders
            headers.add(contentsOf: extraHeaders)
            return handshake.buildUpgradeResponse(channel: channel, upgradeRequest: upgradeRequest, initialResponseHeaders: headers)
        }.flatMapThrowing { (headers: HTTPHeaders) -> HTTPHeaders in
            // The upgrade goes ahead: the HTTP handlers go, this one (not NIO's own) first, before
            // the decoder's leftover bytes pass where it stood.
            let pipeline = channel.pipeline.syncOperations
            let malformedRequests: MalformedRequestHandler = try pipeline.handler(type: MalformedRequestHandler.self)
            pipeline.removeHandler(malformedRequests, promise: nil)
            return headers
        }
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        channel.eventLoop.makeCompletedFuture {
            try open(channel)
            return .webSocket
        }
    }
}
