import Hummingbird
import HTTPTypes
import NIOCore
import PresenceStore

extension Request {
    /// The credential of `Authorization: Bearer …` (a user token or the admin key), if any.
    var bearerToken: String? { headers.bearerToken }
}

/// The HTTP API of PROTOCOL.md: a codec from requests to `PresenceOperations` and back.
struct HTTPRoutes {
    typealias Context = PresenceRequestContext
    let operations: PresenceOperations
    /// Heartbeats and disconnects: most come answered by `HTTPCallsHandler`, the rest here the same way.
    let calls: HTTPCalls
    let metrics: PresenceMetrics

    func register(on router: Router<Context>) {
        var methodsByPath: [(path: RouterPath, methods: Set<HTTPRequest.Method>)] = []
        func route(_ path: RouterPath, _ method: HTTPRequest.Method, _ handler: @escaping @Sendable (Request, Context) async throws -> Response) {
            router.on(path, method: method, use: handler)
            if let index = methodsByPath.firstIndex(where: { $0.path.description == path.description }) {
                methodsByPath[index].methods.insert(method)
            } else {
                methodsByPath.append((path, [method]))
            }
        }
        let operations = operations

        let calls = calls
        route(RouterPath(HTTPCalls.heartbeatPath), .post) { request, context in
            try await calls.respond(.heartbeat, to: request, peer: context.channel.remoteAddress)
        }

        route("/api/list", .get) { request, _ in
            guard let roomToken = request.uri.queryParameters.get("roomToken") else {
                throw PresenceError.invalidArgument("roomToken is required")
            }
            let list = try ListRequest(roomToken: roomToken, limit: QueryParsing.limit(request.uri.queryParameters.get("limit")))
            let caller = try await operations.authenticateUser(token: request.bearerToken)
            return .json(Self.roomJSON(try await operations.list(list, by: caller)))
        }

        route("/api/users/status", .post) { request, _ in
            let statusRequest = try UserIdsRequest(json: JSONObject(parsing: try await Self.body(of: request).readableBytesView))
            let statuses = if let admin = try? operations.authenticateAdmin(key: request.bearerToken) {
                try await operations.userStatuses(statusRequest, by: admin)
            } else {
                try await operations.userStatuses(statusRequest, by: try await operations.authenticateUser(token: request.bearerToken))
            }
            var writer = JSONWriter(capacity: 32 + statuses.count * 96)
            writer.object { $0.field("users") { $0.write(statuses) } }
            return .json(writer.output)
        }

        route(RouterPath(HTTPCalls.disconnectPath), .post) { request, context in
            try await calls.respond(.disconnect, to: request, peer: context.channel.remoteAddress)
        }

        route("/api/update", .post) { request, _ in
            let update = try UpdateRequest(json: JSONObject(parsing: try await Self.body(of: request).readableBytesView))
            let caller = try await operations.authenticateUser(token: request.bearerToken)
            try await operations.update(update, by: caller)
            return .json("{}")
        }

        route("/api/rooms/{roomId}/users/{userId}/data", .put) { request, context in
            let admin = try operations.authenticateAdmin(key: request.bearerToken)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            let userId = try QueryParsing.identifier(context.parameters.get("userId"), field: "userId")
            let data = try Validate.data(try JSONObject.parseValue(try await Self.body(of: request).readableBytesView))
            try await operations.setRoomUserData(roomId: roomId, userId: userId, data: data, by: admin)
            return .json("{}")
        }

        route("/api/rooms/{roomId}/users", .get) { request, context in
            let admin = try operations.authenticateAdmin(key: request.bearerToken)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            let onlineOnly = try QueryParsing.flag(request.uri.queryParameters.get("onlineOnly"), name: "onlineOnly")
            let limit = try QueryParsing.limit(request.uri.queryParameters.get("limit"))
            return .json(Self.roomJSON(try await operations.roomUsers(roomId: roomId, onlineOnly: onlineOnly, limit: limit, by: admin)))
        }

        route("/api/events", .get) { request, _ in
            let admin = try operations.authenticateAdmin(key: request.bearerToken)
            let query = request.uri.queryParameters
            let after = try query.get("after").map { raw throws(PresenceError) -> UInt64 in
                guard let sequence = PresenceEvent.sequence(fromId: raw) else {
                    throw .invalidArgument("after must be an event id (e_ and 16 digits), got \(raw)")
                }
                return sequence
            }
            // Query values come percent-decoded already; decoding again would misread a room id with a "%".
            let roomId = try query.get("roomId").map { roomId throws(PresenceError) in
                try Validate.identifier(roomId, field: "roomId")
                return roomId
            }
            let limit = try QueryParsing.limit(query.get("limit"))
            let page = try await operations.events(after: after, roomId: roomId, limit: limit, by: admin)
            var writer = JSONWriter(capacity: 64 + page.events.count * 160)
            writer.object { object in
                object.field("events") { $0.write(page.events) }
                object.field("next", PresenceEvent.id(forSequence: page.next))
            }
            return .json(writer.output)
        }

        route("/api/webhooks", .get) { request, _ in
            let admin = try operations.authenticateAdmin(key: request.bearerToken)
            let statuses = try await operations.webhookStatuses(by: admin)
            var writer = JSONWriter()
            writer.object { object in
                object.field("endpoints") { array in
                    array.raw("[")
                    for (index, status) in statuses.enumerated() {
                        if index > 0 { array.raw(",") }
                        let figures = operations.webhooks.figures(of: status.endpoint.url)
                        array.object { entry in
                            entry.field("name", status.endpoint.name)
                            entry.field("url", status.endpoint.url)
                            entry.field("state", status.cursor.failedAt == nil ? "active" : "failed")
                            entry.field("deliveredThrough", PresenceEvent.id(forSequence: status.cursor.deliveredThrough))
                            entry.field("failedAt", status.cursor.failedAt ?? 0)
                            entry.field("lagMillis", figures.lagMillis(now: operations.store.clock.nowMillis()))
                            entry.field("attempted", Int64(figures.attempted))
                            entry.field("succeeded", Int64(figures.succeeded))
                            entry.field("failed", Int64(figures.failed))
                        }
                    }
                    array.raw("]")
                }
            }
            return .json(writer.output)
        }

        route("/api/webhooks/enable", .post) { request, _ in
            let admin = try operations.authenticateAdmin(key: request.bearerToken)
            let body = try JSONObject(parsing: try await Self.body(of: request).readableBytesView)
            try await operations.enableWebhook(named: try body.optionalString("name") ?? body.string("url"), by: admin)
            return .json("{}")
        }

        route("/api/users/{userId}/rooms", .get) { request, context in
            let admin = try operations.authenticateAdmin(key: request.bearerToken)
            let userId = try QueryParsing.identifier(context.parameters.get("userId"), field: "userId")
            let onlineOnly = try QueryParsing.flag(request.uri.queryParameters.get("onlineOnly"), name: "onlineOnly")
            let limit = try QueryParsing.limit(request.uri.queryParameters.get("limit"))
            let rooms = try await operations.userRooms(userId: userId, onlineOnly: onlineOnly, limit: limit, by: admin)
            var writer = JSONWriter()
            writer.object { object in
                object.field("rooms") { array in
                    array.raw("[")
                    for (index, room) in rooms.enumerated() {
                        if index > 0 { array.raw(",") }
                        array.object { entry in
                            entry.field("roomId", room.roomId)
                            entry.field("online", room.online)
                            entry.field("lastDisconnected", room.lastDisconnected)
                        }
                    }
                    array.raw("]")
                }
            }
            return .json(writer.output)
        }

        route("/api/rooms/{roomId}/users/{userId}", .delete) { request, context in
            let admin = try operations.authenticateAdmin(key: request.bearerToken)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            let userId = try QueryParsing.identifier(context.parameters.get("userId"), field: "userId")
            try await operations.removeRoomUser(roomId: roomId, userId: userId, by: admin)
            return .json("{}")
        }

        route("/api/rooms/{roomId}", .delete) { request, context in
            let admin = try operations.authenticateAdmin(key: request.bearerToken)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            try await operations.removeRoom(roomId: roomId, by: admin)
            return .json("{}")
        }

        route("/api/rooms/{roomId}/rotate-token", .post) { request, context in
            let admin = try operations.authenticateAdmin(key: request.bearerToken)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            let token = try await operations.rotateRoomToken(roomId: roomId, by: admin)
            var writer = JSONWriter()
            writer.object { $0.field("roomToken", token) }
            return .json(writer.output)
        }

        route("/health", .get) { _, _ in
            try operations.store.checkCanCommit()
            _ = try await operations.statistics()
            return .json("{\"status\":\"ok\"}")
        }

        route("/metrics", .get) { _, _ in
            let text = metrics.render(
                statistics: try? await operations.statistics(), store: operations.store.gauges + operations.webhooks.gauges)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: text)))
        }

        route(RouterPath(WebSocketEndpoint.path), .get) { _, _ in
            throw PresenceError.invalidArgument("\(WebSocketEndpoint.path) needs a WebSocket upgrade request")
        }

        for (path, allowed) in methodsByPath {
            Self.refuseOtherMethods(on: router, path: path, allowed: allowed)
        }
    }

    /// The router answers an unknown method on a known path with 404; PROTOCOL.md wants 405.
    static func refuseOtherMethods<Context: RequestContext>(on router: Router<Context>, path: RouterPath, allowed: Set<HTTPRequest.Method>) {
        let methods: [HTTPRequest.Method] = [.get, .post, .put, .delete, .patch, .trace, .options, .init("QUERY")!]
        let allowHeader = allowed.map(\.rawValue).sorted().joined(separator: ", ")
        for method in methods where !allowed.contains(method) {
            router.on(path, method: method) { request, _ -> Response in
                var response = Response.error(.methodNotAllowed("\(request.method) is not allowed on \(request.uri.path); use \(allowHeader)"))
                response.headers[.allow] = allowHeader
                return response
            }
        }
    }

    static func body(of request: Request) async throws -> ByteBuffer {
        var request = request
        return try await request.collectBody(upTo: ProtocolLimits.maxBodyBytes)
    }

    static func roomJSON(_ snapshot: RoomSnapshot) -> String {
        var writer = JSONWriter(capacity: 64 + snapshot.users.count * 128)
        writer.object { object in
            object.field("roomVersion", Int64(snapshot.roomVersion))
            object.field("users", snapshot.users)
            object.field("onlineCount", Int64(snapshot.onlineCount))
            object.field("userCount", Int64(snapshot.userCount))
        }
        return writer.output
    }
}
