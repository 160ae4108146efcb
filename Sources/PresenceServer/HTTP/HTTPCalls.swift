import HTTPTypes
import Hummingbird
import NIOCore
import PresenceCore

/// `POST /api/heartbeat` and `POST /api/disconnect`: every client's steady traffic, and most of
/// what a change in a small room costs. Decided here, once, for both ways in: `HTTPCallsHandler`
/// answers them on the connection's event loop, before Hummingbird's router, body and
/// middleware (which cost more than the presence work), and Hummingbird's routes answer the few
/// that handler passes on (`answersOnLoop`) through `respond`. Either way a request is charged to
/// its address's rate limit once and its body parsed once.
struct HTTPCalls: Sendable {
    enum Call: Sendable {
        case heartbeat
        case disconnect
    }

    /// An answer ready now, or the work that makes it (an authorizer to ask, a change to store).
    enum Answer: Sendable {
        case now(JSONAnswer)
        case later(@Sendable () async -> JSONAnswer)
    }

    static let heartbeatPath = "/api/heartbeat"
    static let disconnectPath = "/api/disconnect"

    let operations: PresenceOperations
    let addressLimits: AddressLimits
    let trustedProxies: TrustedProxies
    let origins: CORSOrigins
    let serverName: String

    func makeHandler() -> HTTPCallsHandler { HTTPCallsHandler(calls: self) }

    /// The call a request is, by method and path (without its query).
    static func call(_ method: HTTPRequest.Method, _ path: String) -> Call? {
        guard method == .post else { return nil }
        switch path {
        case heartbeatPath: return .heartbeat
        case disconnectPath: return .disconnect
        default: return nil
        }
    }

    /// The call the event loop answers: one with a plain path, on a connection that stays open and
    /// is not asked to upgrade or to confirm the body first. Hummingbird answers the rest.
    static func answeredOnLoop(_ head: HTTPRequest) -> Call? {
        guard let path = head.path, let call = call(head.method, path), head.headerFields[.expect] == nil,
            head.headerFields[.upgrade] == nil, head.headerFields[.connection]?.lowercased().contains("close") != true
        else { return nil }
        return call
    }

    /// The answer to a call whose body has been read (nil: none came).
    func answer(_ call: Call, head: HTTPRequest, body: ByteBuffer?, peer: SocketAddress?) -> Answer {
        if let refusal = charge(head.headerFields, peer: peer) { return .now(refusal) }
        return answer(call, headers: head.headerFields, body: body ?? ByteBuffer())
    }

    /// The answer of a request whose body was too large, read to its end and dropped.
    func tooLarge() -> JSONAnswer {
        failure(.payloadTooLarge("the request body must be at most \(ProtocolLimits.maxBodyBytes) bytes"))
    }

    /// A call Hummingbird routed to it; the error middleware answers a body too large.
    func respond(_ call: Call, to request: Request, peer: SocketAddress?) async throws -> Response {
        if let refusal = charge(request.headers, peer: peer) { return refusal.response }
        var request = request
        let body = try await request.collectBody(upTo: ProtocolLimits.maxBodyBytes)
        switch answer(call, headers: request.headers, body: body) {
        case .now(let answer): return answer.response
        case .later(let work): return await work().response
        }
    }

    /// The head written on the event loop for `answer` to a request with `headers`.
    func head(of answer: JSONAnswer, for headers: HTTPFields) -> HTTPResponse {
        answer.headWritten(origin: origins.allowedOrigin(in: headers), serverName: serverName)
    }

    /// Charges the address's rate limit; the refusal when it is spent.
    private func charge(_ headers: HTTPFields, peer: SocketAddress?) -> JSONAnswer? {
        let address = trustedProxies.clientAddress(peer: peer, headers: headers)
        guard addressLimits.allow(address, now: operations.store.clock.nowMillis()) else {
            return failure(JSONAnswer.addressRateLimit)
        }
        return nil
    }

    /// The answer of a call already charged to its address.
    private func answer(_ call: Call, headers: HTTPFields, body: ByteBuffer) -> Answer {
        switch call {
        case .heartbeat: heartbeat(headers, body: body)
        case .disconnect: disconnect(headers, body: body)
        }
    }

    private func heartbeat(_ headers: HTTPFields, body: ByteBuffer) -> Answer {
        let token = headers.bearerToken
        let parsed = Result { () throws(PresenceError) in try HeartbeatRequest(json: JSONObject(parsing: body.readableBytesView)) }
        if case .identity(let identity) = operations.authorizer.authenticateAtOnce(token: token) {
            switch parsed {
            case .failure(let error):
                return .now(failure(error))
            case .success(let request):
                if let tokens = operations.heartbeatAtOnce(request, as: identity) { return .now(JSONAnswer(tokens.jsonObject)) }
            }
        }
        return .later { [self] in
            await answering { () async throws(PresenceError) -> JSONAnswer in
                // Authentication first, as on every call: a refused caller learns nothing about its body.
                let caller = try await operations.authenticateUser(token: token)
                return JSONAnswer(try await operations.heartbeat(try parsed.get(), by: caller).jsonObject)
            }
        }
    }

    private func disconnect(_ headers: HTTPFields, body: ByteBuffer) -> Answer {
        let sessionToken: String
        do throws(PresenceError) {
            sessionToken = try DisconnectBody.sessionToken(from: Array(body.readableBytesView), contentType: headers[.contentType])
        } catch {
            return .now(failure(error))
        }
        if operations.disconnectAtOnce(sessionToken: sessionToken) { return .now(JSONAnswer("{}")) }
        return .later { [self] in
            await answering { () async throws(PresenceError) -> JSONAnswer in
                try await operations.disconnect(sessionToken: sessionToken)
                return JSONAnswer("{}")
            }
        }
    }

    private func answering(_ work: () async throws(PresenceError) -> JSONAnswer) async -> JSONAnswer {
        do {
            return try await work()
        } catch {
            return failure(error)
        }
    }

    /// An error's answer, counted as the error middleware counts the errors it answers.
    private func failure(_ error: PresenceError) -> JSONAnswer {
        operations.metrics.count(error)
        return .error(error)
    }
}
