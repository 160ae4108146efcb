import HTTPTypes
import Hummingbird
import NIOCore
import PresenceCore

/// A JSON answer of the API, whichever path writes it: Hummingbird's routes (as a `Response`)
/// or the calls answered on the event loop (`HTTPCallsHandler`). Its head is made by
/// `headerFields`, for both, so both send the same one.
struct JSONAnswer: Sendable {
    static let contentType = "application/json; charset=utf-8"
    /// What an address over its request rate is told.
    static let addressRateLimit = PresenceError.rateLimited("too many requests from this address; slow down")

    let status: HTTPResponse.Status
    let body: ByteBuffer
    /// The address rate limit's refusal says when to retry.
    private let retriesAfterASecond: Bool

    init(_ json: String, status: HTTPResponse.Status = .ok) {
        self.init(json, status: status, retriesAfterASecond: false)
    }

    private init(_ json: String, status: HTTPResponse.Status, retriesAfterASecond: Bool) {
        body = ByteBuffer(string: json)
        self.status = status
        self.retriesAfterASecond = retriesAfterASecond
    }

    /// PROTOCOL.md's error body with its status.
    static func error(_ error: PresenceError) -> JSONAnswer {
        JSONAnswer(error.jsonBody, status: .init(code: error.status), retriesAfterASecond: error == addressRateLimit)
    }

    var response: Response {
        Response(status: status, headers: headerFields(), body: .init(byteBuffer: body))
    }

    /// The head written on the event loop: with what Hummingbird adds to a routed answer (its
    /// length, `Date`, `Server`) and the CORS grant its middleware would add.
    func headWritten(origin: String?, serverName: String) -> HTTPResponse {
        HTTPResponse(status: status, headerFields: headerFields(writtenBy: serverName, origin: origin))
    }

    /// Made at its final size: every heartbeat of a live session is answered with it.
    private func headerFields(writtenBy serverName: String? = nil, origin: String? = nil) -> HTTPFields {
        var fields = HTTPFields()
        fields.reserveCapacity(8)
        fields.append(HTTPField(name: .contentType, value: Self.contentType))
        fields.append(HTTPField(name: .cacheControl, value: "no-store"))
        if retriesAfterASecond { fields.append(HTTPField(name: .retryAfter, value: "1")) }
        if let serverName {
            fields.append(HTTPField(name: .contentLength, value: String(body.readableBytes)))
            // The real time, as Hummingbird's answers say it, whatever clock the store keeps.
            fields.append(HTTPField(name: .date, value: HTTPDate.current(nowMillis: SystemWallClock().nowMillis())))
            fields.append(HTTPField(name: .server, value: serverName))
        }
        if let origin { CORSOrigins.grant(origin, in: &fields) }
        return fields
    }
}

extension Response {
    static let jsonContentType = JSONAnswer.contentType

    static func json(_ body: String, status: HTTPResponse.Status = .ok) -> Response {
        JSONAnswer(body, status: status).response
    }

    static func error(_ error: PresenceError) -> Response {
        JSONAnswer.error(error).response
    }
}
