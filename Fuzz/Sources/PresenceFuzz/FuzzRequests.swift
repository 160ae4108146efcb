import FuzzDriver
import PresenceCore

#if canImport(Glibc)
import Glibc
#endif

/// SwiftPM gives an executable its own `main`, so libFuzzer is started through its driver call.
@main struct PresenceFuzz {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { start, count in fuzzOneInput(start!, count) })
    }
}

/// One libFuzzer input: bytes as a request body, a WebSocket message, a query value, and a
/// request head (`fuzzRequestHead`).
/// Any crash, hang or sanitizer report is a bug; so is a value the parser accepts that does
/// not survive being written and parsed again, or a decoded request that breaks PROTOCOL.md's limits.
func fuzzOneInput(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))

    let parsed = try? JSONParser.parse(bytes)
    if let value = parsed {
        let written = value.compactJSON
        guard let reparsed = try? JSONParser.parse(Array(written.utf8)), reparsed == value else {
            fatalError("a parsed value does not survive writing and parsing: \(written)")
        }
    }
    // Requests are read as members, not as a dictionary: the same document, the same fields.
    var members: [(name: String, value: JSONValue)]?
    var membersValid = true
    do {
        members = try JSONParser.parseMembers(array: bytes)
    } catch {
        membersValid = false
    }
    precondition(membersValid == (parsed != nil), "the members and the value disagree on whether the document is valid")
    if case .object(let fields)? = parsed {
        guard let members else { fatalError("an object was not read as members") }
        precondition(Set(members.map(\.name)) == Set(fields.keys), "the members name other fields than the object")
        let object = try! JSONObject(parsing: bytes)
        for (name, value) in fields { precondition(object[name] == value, "field \(name) differs between members and object") }
    } else {
        precondition(members == nil, "members of a document that is not an object")
    }

    if let request = try? SocketRequest.decode(bytes) {
        check(request)
    }
    if let object = try? JSONObject(parsing: bytes) {
        if let heartbeat = try? HeartbeatRequest(json: object) { check(heartbeat) }
        if let update = try? UpdateRequest(json: object) { check(update.data) }
        if let watch = try? UserIdsRequest(json: object) { check(SocketRequest(id: nil, kind: .watchUsers(watch))) }
        _ = try? object.data()
    }
    let isJSONObject = (try? JSONObject(parsing: bytes)) != nil
    for contentType in [nil, "application/json", "text/plain"] {
        // A JSON body may name any string, the empty one too: like every unknown token, a no-op.
        // A bare token is the whole body: never empty, never with white space inside.
        if let token = try? DisconnectBody.sessionToken(from: bytes, contentType: contentType), !isJSONObject {
            precondition(!token.isEmpty && !token.contains(where: \.isWhitespace), "a malformed bare session token was accepted")
        }
    }

    if let text = String(validating: bytes, as: UTF8.self) {
        if let identifier = try? QueryParsing.identifier(text, field: "roomId") {
            precondition((1...ProtocolLimits.maxIdentifierBytes).contains(identifier.utf8.count), "identifier length")
        }
        if let limit = try? QueryParsing.limit(text) {
            precondition(ProtocolLimits.limitRange.contains(limit), "limit out of range: \(limit)")
        }
        _ = try? QueryParsing.flag(text, name: "onlineOnly")
        if let sequence = PresenceEvent.sequence(fromId: text) {
            precondition(PresenceEvent.id(forSequence: sequence) == text, "an event id that does not name its own sequence: \(text)")
        }
    }
    fuzzRequestHead(bytes)
    return 0
}

private func check(_ request: SocketRequest) {
    switch request.kind {
    case .heartbeat(let heartbeat): check(heartbeat)
    case .subscribe(let list):
        precondition(ProtocolLimits.limitRange.contains(list.limit), "limit out of range: \(list.limit)")
    case .update(let update): check(update.data)
    case .watchUsers(let watch), .unwatchUsers(let watch):
        precondition(watch.userIds.count <= UserIdsRequest.maximum, "too many user ids")
        for userId in watch.userIds {
            precondition((1...ProtocolLimits.maxIdentifierBytes).contains(userId.utf8.count), "identifier length")
        }
    case .auth, .unsubscribe, .disconnect: break
    }
}

private func check(_ heartbeat: HeartbeatRequest) {
    for identifier in [heartbeat.roomId, heartbeat.userId, heartbeat.sessionId] {
        precondition((1...ProtocolLimits.maxIdentifierBytes).contains(identifier.utf8.count), "identifier length")
    }
    precondition(ProtocolLimits.intervalRange.contains(heartbeat.interval), "interval out of range")
    precondition((heartbeat.name?.utf8.count ?? 0) <= ProtocolLimits.maxNameBytes, "name too long")
    precondition((heartbeat.image?.utf8.count ?? 0) <= ProtocolLimits.maxImageBytes, "image too long")
}

private func check(_ data: JSONValue?) {
    guard let data else { return }
    precondition(data.compactJSON.utf8.count <= ProtocolLimits.maxDataBytes, "data over the limit was accepted")
}
