import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import PresenceCore
import Synchronization

/// A webhook receiver for the benchmark: answers every POST with 204 (or, hanging, never) and
/// notes, for each event in it, how long after the event it arrived.
public final class WebhookSink: Sendable {
    private let received = Mutex<(events: Int, lagsMillis: [Double])>((0, []))
    private let channel: any Channel
    public let url: String

    public static func start(group: any EventLoopGroup, hanging: Bool = false) async throws -> WebhookSink {
        let box = Mutex<WebhookSink?>(nil)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(hanging: hanging) { body in box.withLock { $0 }?.note(body) })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let sink = WebhookSink(channel: channel)
        box.withLock { $0 = sink }
        return sink
    }

    private init(channel: any Channel) {
        self.channel = channel
        url = "http://127.0.0.1:\(channel.localAddress?.port ?? 0)/hooks"
    }

    private func note(_ body: ByteBuffer) {
        let now = Double(SystemWallClock().nowMillis())
        guard case .object(let fields)? = try? JSONParser.parse(body.readableBytesView),
            case .array(let events)? = fields["events"]
        else { return }
        let lags = events.compactMap { event -> Double? in
            guard case .object(let fields) = event, case .integer(let at)? = fields["at"] else { return nil }
            return now - Double(at)
        }
        received.withLock {
            $0.events += events.count
            $0.lagsMillis += lags
        }
    }

    public var eventCount: Int { received.withLock { $0.events } }
    public var lagsMillis: [Double] { received.withLock { $0.lagsMillis } }

    public func reset() { received.withLock { $0 = (0, []) } }

    public func close() async { try? await channel.close() }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        private var body = ByteBuffer()
        private let onBody: @Sendable (ByteBuffer) -> Void
        private let hanging: Bool

        init(hanging: Bool, onBody: @escaping @Sendable (ByteBuffer) -> Void) {
            self.hanging = hanging
            self.onBody = onBody
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head:
                body.clear()
            case .body(var part):
                body.writeBuffer(&part)
            case .end:
                guard !hanging else { return }
                onBody(body)
                var headers = HTTPHeaders()
                headers.add(name: "content-length", value: "0")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .noContent, headers: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}

/// Joins and leaves through the SQLite server without a webhook and then with one endpoint
/// (a receiver in this process), side by side: the ratio of the two rates, and how long after
/// each event its delivery arrived.
public struct WebhookChurn: Sendable {
    public var churn: ServerChurn

    public init(churn: ServerChurn = ServerChurn()) {
        self.churn = churn
    }

    public static let smoke = WebhookChurn(churn: .smoke)
    static let name = "webhooks"
    static let secret = "whsec_" + Data((0..<24).map { UInt8($0) }).base64EncodedString()

    public func run(_ context: BenchmarkContext) async throws -> [Figure] {
        context.progress("webhooks: join/leave churn on the sqlite store without a webhook")
        let without = try await churn.measure(context, store: "sqlite")
        let sink = try await WebhookSink.start(group: context.group)
        context.progress("webhooks: the same churn with one webhook endpoint")
        let expectedEvents = Mutex(0)
        let with = try await churn.measure(context, store: "sqlite", extraArguments: ["--webhook", "\(sink.url),\(Self.secret)"]) { changes in
            // Every change is one event: wait (bounded) for the deliveries to catch up.
            expectedEvents.withLock { $0 = changes }
            let start = ContinuousClock.now
            while sink.eventCount < changes, ContinuousClock.now - start < .seconds(30) { try await Task.sleep(for: .milliseconds(20)) }
        }
        let expected = expectedEvents.withLock { $0 }
        await sink.close()
        // An endpoint that takes every request and never answers: deliveries wait out their timeouts
        // and back off, and the presence API must not notice.
        let hangingSink = try await WebhookSink.start(group: context.group, hanging: true)
        context.progress("webhooks: the same churn with an endpoint that never answers")
        let hanging = try await churn.measure(
            context, store: "sqlite", extraArguments: ["--webhook", "\(hangingSink.url),\(Self.secret)"])
        await hangingSink.close()
        let lags = Percentiles(sink.lagsMillis)
        let rate = (with.joinsPerSecond + with.leavesPerSecond) / (without.joinsPerSecond + without.leavesPerSecond)
        return [
            Figure(scenario: Self.name, name: "joins + leaves/s, no webhook", value: without.joinsPerSecond + without.leavesPerSecond, unit: "/s"),
            Figure(scenario: Self.name, name: "joins + leaves/s, one webhook endpoint", value: with.joinsPerSecond + with.leavesPerSecond, unit: "/s"),
            .atLeast(0.8, scenario: Self.name, name: "rate with a webhook ÷ rate without", value: rate, unit: "×"),
            .atLeast(
                0.8, scenario: Self.name, name: "rate with a hanging endpoint ÷ rate without",
                value: (hanging.joinsPerSecond + hanging.leavesPerSecond) / (without.joinsPerSecond + without.leavesPerSecond), unit: "×"),
            Figure(scenario: Self.name, name: "events delivered of those written", value: Double(sink.eventCount) / Double(max(1, expected)), unit: "×"),
            Figure(scenario: Self.name, name: "delivery lag after the event, p50", value: lags.p50, unit: "ms"),
            .below(1_000, scenario: Self.name, name: "delivery lag after the event, p99", value: lags.p99, unit: "ms"),
        ]
    }
}
