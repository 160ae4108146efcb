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
