import Hummingbird
import HTTPTypes
import NIOCore
import PresenceStore

extension Request {
    /// The credential of `Authorization: Bearer …` (a user token or the admin key), if any.
    var bearerToken: String? {
        guard let header = headers[.authorization], header.hasPrefix("Bearer ") else { return nil }
        return String(header.dropFirst("Bearer ".count))
    }
}

/// The HTTP API of PROTOCOL.md.
struct HTTPRoutes<Context: RequestContext> {
    let store: any PresenceStore
    let metrics: PresenceMetrics
    let configuration: PresenceServerConfiguration
    var authorizer: any PresenceAuthorizer { configuration.authorizer }

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

        route("/api/heartbeat", .post) { request, _ in
            let identity = try await authorizer.authenticate(token: request.bearerToken)
            let body = try await Self.body(of: request)
            var heartbeat = try JSONObject(parsing: body.readableBytesView).heartbeatRequest()
            try await authorizer.authorize(identity, .join(roomId: heartbeat.roomId, userId: heartbeat.userId))
            heartbeat = heartbeat.withProfile(name: identity?.name, image: identity?.image)
            let tokens = try await store.heartbeat(heartbeat)
            metrics.heartbeats.increment()
            var writer = JSONWriter()
            writer.object { object in
                object.field("roomToken", tokens.roomToken)
                object.field("sessionToken", tokens.sessionToken)
            }
            return .json(writer.output)
        }

        route("/api/list", .get) { request, _ in
            guard let roomToken = request.uri.queryParameters.get("roomToken") else {
                throw PresenceError.invalidArgument("roomToken is required")
            }
            let limit = try QueryParsing.limit(request.uri.queryParameters.get("limit"))
            let identity = try await authorizer.authenticate(token: request.bearerToken)
            // An unknown token reads as an empty room, so the answer never tells whether a room exists.
            guard let roomId = try await store.roomId(forToken: roomToken) else { return .json(Self.roomJSON(.empty)) }
            try await authorizer.authorize(identity, .read(roomId: roomId))
            return .json(Self.roomJSON(try await store.list(roomToken: roomToken, limit: limit)))
        }

        route("/api/disconnect", .post) { request, _ in
            let body = try await Self.body(of: request)
            try await store.disconnect(sessionToken: try Self.sessionToken(fromDisconnectBody: body, request: request))
            return .json("{}")
        }

        route("/api/update", .post) { request, _ in
            let body = try await Self.body(of: request)
            let object = try JSONObject(parsing: body.readableBytesView)
            let sessionToken = try object.string("sessionToken")
            let data = try object.data()
            let identity = try await authorizer.authenticate(token: request.bearerToken)
            guard let owner = try await store.sessionOwner(sessionToken: sessionToken) else {
                throw PresenceError.notFound("no live session has this session token")
            }
            try await authorizer.authorize(identity, .update(roomId: owner.roomId, userId: owner.userId))
            try await store.update(sessionToken: sessionToken, data: data)
            return .json("{}")
        }

        route("/api/rooms/{roomId}/users/{userId}/data", .put) { request, context in
            try authorizeAdmin(request)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            let userId = try QueryParsing.identifier(context.parameters.get("userId"), field: "userId")
            let body = try await Self.body(of: request)
            let data = try Validate.data(try JSONObject.parseValue(body.readableBytesView))
            try await store.updateRoomUser(roomId: roomId, userId: userId, data: data)
            return .json("{}")
        }

        route("/api/rooms/{roomId}/users", .get) { request, context in
            try authorizeAdmin(request)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            let onlineOnly = try QueryParsing.flag(request.uri.queryParameters.get("onlineOnly"), name: "onlineOnly")
            let limit = try QueryParsing.limit(request.uri.queryParameters.get("limit"))
            return .json(Self.roomJSON(try await store.listRoom(roomId: roomId, onlineOnly: onlineOnly, limit: limit)))
        }

        route("/api/users/{userId}/rooms", .get) { request, context in
            try authorizeAdmin(request)
            let userId = try QueryParsing.identifier(context.parameters.get("userId"), field: "userId")
            let onlineOnly = try QueryParsing.flag(request.uri.queryParameters.get("onlineOnly"), name: "onlineOnly")
            let limit = try QueryParsing.limit(request.uri.queryParameters.get("limit"))
            let rooms = try await store.listUser(userId: userId, onlineOnly: onlineOnly, limit: limit)
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
            try authorizeAdmin(request)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            let userId = try QueryParsing.identifier(context.parameters.get("userId"), field: "userId")
            try await store.removeRoomUser(roomId: roomId, userId: userId)
            return .json("{}")
        }

        route("/api/rooms/{roomId}", .delete) { request, context in
            try authorizeAdmin(request)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            try await store.removeRoom(roomId: roomId)
            return .json("{}")
        }

        route("/api/rooms/{roomId}/rotate-token", .post) { request, context in
            try authorizeAdmin(request)
            let roomId = try QueryParsing.identifier(context.parameters.get("roomId"), field: "roomId")
            guard let token = try await store.rotateRoomToken(roomId: roomId) else {
                throw PresenceError.notFound("room \(roomId) does not exist")
            }
            var writer = JSONWriter()
            writer.object { $0.field("roomToken", token) }
            return .json(writer.output)
        }

        route("/health", .get) { _, _ in
            do {
                _ = try await store.statistics()
            } catch {
                throw PresenceError.unavailable("the store is not usable")
            }
            return .json("{\"status\":\"ok\"}")
        }

        route("/metrics", .get) { _, _ in
            let text = metrics.render(statistics: try await store.statistics())
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: text)))
        }

        route("/api/ws", .get) { _, _ in
            throw PresenceError.invalidArgument("/api/ws needs a WebSocket upgrade request")
        }

        for (path, allowed) in methodsByPath {
            Self.refuseOtherMethods(on: router, path: path, allowed: allowed)
        }
    }

    /// The router answers an unknown method on a known path with 404; PROTOCOL.md wants 405.
    static func refuseOtherMethods(on router: Router<Context>, path: RouterPath, allowed: Set<HTTPRequest.Method>) {
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

    func authorizeAdmin(_ request: Request) throws(PresenceError) {
        guard let adminKey = configuration.adminKey else {
            throw .unauthenticated("admin calls are disabled: the server has no admin key")
        }
        guard let key = request.bearerToken else {
            throw .unauthenticated("admin calls need Authorization: Bearer <admin key>")
        }
        guard Tokens.constantTimeEquals(key, adminKey) else {
            throw .unauthenticated("the admin key is not valid")
        }
    }

    static func body(of request: Request) async throws -> ByteBuffer {
        var request = request
        return try await request.collectBody(upTo: Limits.maxBodyBytes)
    }

    /// `navigator.sendBeacon` sends `text/plain`: accept a JSON object, or the bare token.
    static func sessionToken(fromDisconnectBody body: ByteBuffer, request: Request) throws(PresenceError) -> String {
        let text = String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)
        let contentType = request.headers[.contentType]?.lowercased() ?? ""
        if text.hasPrefix("{") || contentType.hasPrefix("application/json") {
            return try JSONObject(parsing: body.readableBytesView).string("sessionToken")
        }
        guard !text.isEmpty, text.utf8.count <= 1024, !text.contains(where: \.isWhitespace) else {
            throw .invalidArgument("the body must be {\"sessionToken\": …} or the bare session token")
        }
        return text
    }

    static func roomJSON(_ snapshot: RoomSnapshot) -> String {
        var writer = JSONWriter(capacity: 64 + snapshot.users.count * 128)
        writer.object { object in
            object.field("roomVersion", Int64(snapshot.roomVersion))
            object.field("users", snapshot.users)
        }
        return writer.output
    }
}
