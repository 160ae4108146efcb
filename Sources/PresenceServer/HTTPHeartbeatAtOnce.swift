import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTPTypes
import PresenceCore
import Synchronization

/// What an HTTP heartbeat answered on the event loop needs, shared by every connection.
struct HTTPHeartbeatAtOnce: Sendable {
    static let path = "/api/heartbeat"

    let operations: PresenceOperations
    let addressLimits: AddressLimits
    let trustedProxies: TrustedProxies
    let origins: CORSOrigins
    let serverName: String

    func makeHandler() -> HTTPHeartbeatAtOnceHandler { HTTPHeartbeatAtOnceHandler(shared: self) }

    /// The heartbeat's answer when it can be given now; nil sends the request the full way
    /// (Hummingbird's router and middleware), which answers everything else, errors included,
    /// and charges the address's rate limit itself.
    func answer(_ head: HTTPRequest, body: ByteBuffer?, peer: SocketAddress?) -> (HTTPResponse, ByteBuffer)? {
        let address = trustedProxies.clientAddress(peer: peer, headers: head.headerFields)
        let now = operations.store.clock.nowMillis()
        guard addressLimits.allow(address, now: now) else { return nil }
        guard let tokens = heartbeat(head, body: body) else {
            addressLimits.refund(address)
            return nil
        }
        var reply = ByteBuffer(string: tokens.jsonObject)
        var fields: HTTPFields = [
            .contentType: Response.jsonContentType, .cacheControl: "no-store", .contentLength: String(reply.readableBytes),
        ]
        if let origin = origins.allowedOrigin(in: head.headerFields) { CORSOrigins.grant(origin, in: &fields) }
        // The real time, as Hummingbird's answers say it, whatever clock the store keeps.
        fields[.date] = HTTPDate.current(nowMillis: SystemWallClock().nowMillis())
        fields[.server] = serverName
        return (HTTPResponse(status: .ok, headerFields: fields), reply.readSlice(length: reply.readableBytes)!)
    }

    private func heartbeat(_ head: HTTPRequest, body: ByteBuffer?) -> SessionTokens? {
        guard let body, let object = try? JSONObject(parsing: body.readableBytesView),
            let request = try? HeartbeatRequest(json: object)
        else { return nil }
        return operations.heartbeatAtOnce(request, token: head.headerFields.bearerToken)
    }

    /// A request this path may take: a plain `POST /api/heartbeat` on a connection that stays open.
    static func mayAnswer(_ head: HTTPRequest) -> Bool {
        head.method == .post && head.path == path && head.headerFields[.expect] == nil && head.headerFields[.upgrade] == nil
            && head.headerFields[.connection]?.lowercased().contains("close") != true
    }
}

/// Answers `POST /api/heartbeat` of a live session on the connection's event loop, before
/// Hummingbird's handling of the request: with the body, router, middleware and task that
/// handling costs, the heartbeat cost more than `/health`, for about 1 µs of presence work.
/// Only a request nothing waits before is answered here, so answers keep their order on a
/// pipelined connection; anything else, and whatever this path cannot answer, goes on to
/// Hummingbird unchanged.
final class HTTPHeartbeatAtOnceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum Reading {
        case betweenRequests
        /// A heartbeat this handler may answer, read up to here.
        case holding(HTTPRequest, body: ByteBuffer?)
        /// The request being read is Hummingbird's.
        case passing
    }

    private let shared: HTTPHeartbeatAtOnce
    private var reading = Reading.betweenRequests
    /// Requests passed on whose answer's end has not been written yet.
    private var unanswered = 0
    private var needsFlush = false

    init(shared: HTTPHeartbeatAtOnce) {
        self.shared = shared
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (reading, unwrapInboundIn(data)) {
        case (.betweenRequests, .head(let head)):
            // A full outbound buffer means a client that does not read: let Hummingbird's
            // backpressure hold it, rather than queue answers here.
            if unanswered == 0, context.channel.isWritable, HTTPHeartbeatAtOnce.mayAnswer(head) {
                reading = .holding(head, body: nil)
            } else {
                pass(.head(head), context: context)
            }
        case (.holding(let head, var body), .body(var part)):
            reading = .passing  // not a copy-on-write of the held body while it grows
            if body == nil {
                body = part
            } else {
                body!.writeBuffer(&part)
            }
            if body!.readableBytes > ProtocolLimits.maxBodyBytes {
                passHeld(head, body: body, context: context)
            } else {
                reading = .holding(head, body: body)
            }
        case (.holding(let head, let body), .end):
            if let (response, reply) = shared.answer(head, body: body, peer: context.channel.remoteAddress) {
                context.write(wrapOutboundOut(.head(response)), promise: nil)
                context.write(wrapOutboundOut(.body(reply)), promise: nil)
                context.write(wrapOutboundOut(.end(nil)), promise: nil)
                needsFlush = true
            } else {
                passHeld(head, body: body, context: context)
                context.fireChannelRead(data)
            }
            reading = .betweenRequests
        case (.holding(let held, let body), .head):
            // The decoder never sends a head inside a request; pass both on for Hummingbird to refuse.
            passHeld(held, body: body, context: context)
            context.fireChannelRead(data)
        case (.passing, let part):
            if case .end = part { reading = .betweenRequests }
            context.fireChannelRead(data)
        case (.betweenRequests, let part):
            // Parts without a head: Hummingbird reports them.
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // One flush for all the answers of one read: a pipelining client gets them in one write.
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { unanswered -= 1 }
        context.write(data, promise: promise)
    }

    private func pass(_ head: HTTPRequestPart, context: ChannelHandlerContext) {
        unanswered += 1
        reading = .passing
        context.fireChannelRead(wrapInboundOut(head))
    }

    private func passHeld(_ head: HTTPRequest, body: ByteBuffer?, context: ChannelHandlerContext) {
        pass(.head(head), context: context)
        if let body { context.fireChannelRead(wrapInboundOut(.body(body))) }
    }
}

extension HTTPFields {
    /// The credential of `Authorization: Bearer …` (a user token or the admin key), if any.
    var bearerToken: String? {
        guard let header = self[.authorization], header.hasPrefix("Bearer ") else { return nil }
        return String(header.dropFirst("Bearer ".count))
    }
}

/// The `Date` header's text (RFC 9110 IMF-fixdate), made once a second and shared.
enum HTTPDate {
    private static let cache = Mutex<(second: Int64, text: String)>((-1, ""))

    static func current(nowMillis: Int64) -> String {
        let second = nowMillis / 1000
        if let text = cache.withLock({ $0.second == second ? $0.text : nil }) { return text }
        let text = format(epochSeconds: second)
        cache.withLock { $0 = (second, text) }
        return text
    }

    static func format(epochSeconds: Int64) -> String {
        let days = epochSeconds >= 0 ? epochSeconds / 86_400 : (epochSeconds - 86_399) / 86_400
        let secondOfDay = epochSeconds - days * 86_400
        // Days to a civil date (Howard Hinnant's algorithm), in the proleptic Gregorian calendar.
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        // 1970-01-01 was a Thursday.
        let weekday = ((days % 7) + 11) % 7
        let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func twoDigits(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(weekdays[Int(weekday)]), \(twoDigits(day)) \(months[Int(month) - 1]) \(year) "
            + "\(twoDigits(secondOfDay / 3_600)):\(twoDigits(secondOfDay / 60 % 60)):\(twoDigits(secondOfDay % 60)) GMT"
    }
}
