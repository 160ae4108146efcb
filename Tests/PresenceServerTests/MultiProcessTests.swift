import Foundation
import PresencePostgres
import PresenceStore
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Several real `presence-server` processes on one real PostgreSQL (started by `scripts/test.sh`),
/// each with a database of its own test. Leases are short (1.2 s) so failures play out quickly.
struct Cluster {
    static let url = ProcessInfo.processInfo.environment["PRESENCE_TEST_POSTGRES_URL"]
    static let lease = 1.2
    let databaseURL: String
    var servers: [ServerProcess] = []

    init() async throws {
        let settings = try PostgresSettings(url: Self.url!)
        let name = "m_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        _ = try await settings.creatingDatabase(named: name)
        var components = URLComponents(string: Self.url!)!
        components.path = "/" + name
        databaseURL = components.string!
    }

    /// Starts one more process and returns its index; `url` reaches the database another way (a relay).
    @discardableResult
    mutating func start(url: String? = nil, extraArguments: [String] = []) async throws -> Int {
        let server = try ServerProcess(executable: presenceServerExecutable, arguments: [
            "--port", "0", "--store", "postgres", "--postgres-url", url ?? databaseURL, "--postgres-lease", "\(Self.lease)",
            "--admin-key", adminKey,
        ] + extraArguments)
        try await server.waitUntilListening()
        servers.append(server)
        return servers.count - 1
    }

    func port(_ index: Int) -> Int { servers[index].port }
}

/// Runs a command and waits for it with waitpid (Foundation's Process did not notice this
/// script's exit here, perhaps for the server it leaves running).
func runToCompletion(_ path: String, _ arguments: [String]) throws -> Int32 {
    var pid: pid_t = 0
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    guard posix_spawn(&pid, path, &actions, nil, argv, environ) == 0 else { throw TestFailure("cannot run \(path)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    return (status >> 8) & 0xff
}

/// Per writer: the last value acknowledged, and the one sent since (which may or may not have landed).
final class Acknowledged: Sendable {
    let values = Mutex<[String: (done: Int, inFlight: Int)]>([:])
}

/// The process id of the test cluster's PostgreSQL server.
func postmasterId(_ folder: String) throws -> String {
    try String(contentsOfFile: folder + "/data/postmaster.pid", encoding: .utf8).split(separator: "\n").first.map(String.init) ?? ""
}

/// `Tests/support/tcp_relay.py` between a process and PostgreSQL; SIGSTOP cuts the link the
/// way a partition does (nothing answers, nothing closes), SIGCONT mends it.
final class Relay: @unchecked Sendable {
    let process = Process()
    let output = Pipe()
    var port = 0

    init(toPort target: Int) async throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "Tests/support/tcp_relay.py", "\(target)"]
        process.standardOutput = output
        try process.run()
        let line = try await readOutput(of: output) { $0.hasSuffix("\n") }
        guard let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw TestFailure("the relay printed no port: \(line)")
        }
        self.port = port
    }

    func cut() { kill(process.processIdentifier, SIGSTOP) }
    func mend() { kill(process.processIdentifier, SIGCONT) }

    deinit {
        kill(process.processIdentifier, SIGCONT)
        kill(process.processIdentifier, SIGKILL)
    }
}

/// HTTP to a real process over a real socket.
struct ProcessClient: Sendable {
    let port: Int
    let session: URLSession

    init(port: Int) {
        self.port = port
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 5
        session = URLSession(configuration: configuration)
    }

    func call(_ method: String, _ path: String, body: String? = nil, admin: Bool = false) async throws -> (status: Int, body: String) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        if admin { request.setValue("Bearer \(adminKey)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await session.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
    }

    /// The first (at most 1,000) events this process reads from the log.
    func events() async throws -> [JSONValue] {
        let reply = try await call("GET", "/api/events?limit=1000", admin: true)
        guard case .array(let events)? = try JSONParser.parse(reply.body.utf8)["events"] else { throw TestFailure(reply.body) }
        return events
    }

    func heartbeat(room: String = "room", user: String, session sessionId: String, interval: Int) async throws -> SessionTokens {
        let reply = try await call(
            "POST", "/api/heartbeat",
            body: #"{"roomId":"\#(room)","userId":"\#(user)","sessionId":"\#(sessionId)","interval":\#(interval)}"#)
        guard reply.status == 200 else { throw TestFailure("heartbeat on :\(port) failed: \(reply.status) \(reply.body)") }
        return try JSONDecoder().decode(SessionTokens.self, from: Data(reply.body.utf8))
    }

    func listRoom(_ roomId: String = "room") async throws -> RoomListing {
        let reply = try await call("GET", "/api/rooms/\(roomId)/users?limit=1000", admin: true)
        guard reply.status == 200 else { throw TestFailure("listRoom on :\(port) failed: \(reply.status) \(reply.body)") }
        return try JSONDecoder().decode(RoomListing.self, from: Data(reply.body.utf8))
    }
}

/// What a subscriber shows: the snapshot with every diff applied, checking the version chain.
actor SubscriberView {
    let socket: TestSocket
    private(set) var users: [UserRecord]
    private(set) var version: UInt64
    private(set) var brokenChain: [String] = []
    /// Every offline transition seen, with when it arrived.
    private(set) var wentOffline: [(userId: String, lastDisconnected: Int64, arrivedAt: Int64)] = []

    init(port: Int, roomToken: String) async throws {
        socket = TestSocket(port: port)
        let snapshot = try await socket.subscribe(roomToken)
        users = snapshot.users
        version = snapshot.roomVersion
    }

    /// Applies diffs as they come until `condition` holds or `timeout` passes.
    func follow(timeout: Duration, until condition: @Sendable ([UserRecord]) -> Bool) async -> Bool {
        let end = ContinuousClock.now + timeout
        while !condition(users) {
            let left = end - ContinuousClock.now
            guard left > .zero else { return false }
            if let text = await socket.nextRaw(timeout: min(left, .milliseconds(200))) { apply(text) }
        }
        return true
    }

    private func apply(_ text: String) {
        guard let message = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)),
            message["type"]?.string == "diff", let diff = try? message.decode(DiffMessage.self)
        else { return }
        if diff.from != version { brokenChain.append("diff from \(diff.from) onto \(version)") }
        version = diff.roomVersion
        let arrivedAt = Int64(Date().timeIntervalSince1970 * 1_000)
        for record in diff.upsert where !record.online && users.first(where: { $0.userId == record.userId })?.online == true {
            wentOffline.append((record.userId, record.lastDisconnected, arrivedAt))
        }
        users = diff.diff.applied(to: users)
    }
}

@Suite(.enabled(if: Cluster.url != nil, "needs the PostgreSQL server of scripts/test.sh"), .serialized)
struct MultiProcessTests {
    @Test func subscribersOnEveryProcessFollowChangesMadeOnAnyOther() async throws {
        var cluster = try await Cluster()
        for _ in 0..<3 { try await cluster.start() }
        let clients = (0..<3).map { ProcessClient(port: cluster.port($0)) }
        let first = try await clients[0].heartbeat(user: "host", session: "host-1", interval: 60_000)
        var views: [SubscriberView] = []
        for index in 0..<3 { views.append(try await SubscriberView(port: cluster.port(index), roomToken: first.roomToken)) }

        var random = SeededGenerator(seed: 12)
        var tokens: [String: String] = [:]
        for step in 0..<60 {
            let client = clients.randomElement(using: &random)!
            let user = "u\(Int.random(in: 0..<6, using: &random))"
            let sessionId = "\(user)-\(Int.random(in: 0..<2, using: &random))"
            switch Int.random(in: 0..<4, using: &random) {
            case 0, 1:
                tokens[sessionId] = try await client.heartbeat(user: user, session: sessionId, interval: 60_000).sessionToken
            case 2:
                if let token = tokens.removeValue(forKey: sessionId) {
                    let reply = try await client.call("POST", "/api/disconnect", body: #"{"sessionToken":"\#(token)"}"#)
                    #expect(reply.status == 200)
                }
            default:
                if let token = tokens[sessionId] {
                    let reply = try await client.call(
                        "POST", "/api/update", body: #"{"sessionToken":"\#(token)","data":{"step":\#(step)}}"#)
                    #expect(reply.status == 200, "\(reply.body)")
                }
            }
        }
        // Exactly one process expires sessions for all, and every one serves.
        var leaders = 0
        for client in clients {
            let scrape = try await client.call("GET", "/metrics").body
            #expect(metricValue("presence_postgres_serving", in: scrape) == 1)
            leaders += metricValue("presence_postgres_expiry_leader", in: scrape) ?? 0
        }
        #expect(leaders == 1)
        // Every process answers the same, and every subscriber converges on it without a gap.
        let truth = try await clients[0].listRoom()
        for client in clients.dropFirst() { #expect(try await client.listRoom() == truth) }
        for (index, view) in views.enumerated() {
            let converged = await view.follow(timeout: .seconds(10)) { $0 == truth.users }
            let (shown, version, brokenChain) = (await view.users, await view.version, await view.brokenChain)
            #expect(converged, "the subscriber on process \(index) shows \(shown.map(\.userId))")
            #expect(version == truth.roomVersion)
            #expect(brokenChain.isEmpty, "\(brokenChain)")
        }
    }

    @Test func aKilledProcessesSessionsExpireOnTimeElsewhereAndItsChangesStay() async throws {
        var cluster = try await Cluster()
        try await cluster.start()
        try await cluster.start()
        let doomed = ProcessClient(port: cluster.port(0))
        let survivor = ProcessClient(port: cluster.port(1))
        let tokens = try await doomed.heartbeat(user: "anchor", session: "anchor-1", interval: 60_000)
        let view = try await SubscriberView(port: cluster.port(1), roomToken: tokens.roomToken)
        // Sessions heartbeated only through the process that is about to die.
        var lastBeat: [String: Int64] = [:]
        for round in 0..<3 {
            for user in ["a", "b", "c"] {
                _ = try await doomed.heartbeat(user: user, session: "\(user)-1", interval: 1_000)
                lastBeat[user] = Int64(Date().timeIntervalSince1970 * 1_000)
            }
            let update = try await doomed.call(
                "PUT", "/api/rooms/room/users/anchor/data", body: #"{"round":\#(round)}"#, admin: true)
            #expect(update.status == 200)
            try await Task.sleep(for: .milliseconds(400))
        }
        // Under load: writers keep changing their own data through the doomed process until it
        // dies. What each saw acknowledged must be there afterwards (or the one in flight).
        let writers = (0..<8).map { "writer\($0)" }
        for writer in writers { _ = try await doomed.heartbeat(user: writer, session: "\(writer)-1", interval: 60_000) }
        let acknowledged = Acknowledged()
        let doomedPort = cluster.port(0)
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for writer in writers {
                    group.addTask {
                        let client = ProcessClient(port: doomedPort)
                        for value in 1... {
                            acknowledged.values.withLock { $0[writer, default: (0, 0)].inFlight = value }
                            guard let reply = try? await client.call(
                                "PUT", "/api/rooms/room/users/\(writer)/data", body: "\(value)", admin: true), reply.status == 200
                            else { return }
                            acknowledged.values.withLock { $0[writer]!.done = value }
                        }
                    }
                }
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        // Heard from just before the kill: its deadline comes after the dead process's lease ran out.
        _ = try await doomed.heartbeat(user: "d", session: "d-1", interval: 1_000)
        lastBeat["d"] = Int64(Date().timeIntervalSince1970 * 1_000)
        kill(cluster.servers[0].process.processIdentifier, SIGKILL)
        let killedAt = Int64(Date().timeIntervalSince1970 * 1_000)
        await load.value
        let afterKill = try await survivor.listRoom()
        for writer in writers {
            let (done, inFlight) = acknowledged.values.withLock { $0[writer] ?? (0, 0) }
            #expect(done > 0, "\(writer) got nothing acknowledged before the kill")
            let stored = afterKill.users.first { $0.userId == writer }?.data
            #expect(stored == .integer(Int64(done)) || stored == .integer(Int64(inFlight)), "\(writer): \(String(describing: stored)), acknowledged \(done)")
        }

        let allOffline = await view.follow(timeout: .seconds(20)) { users in
            ["a", "b", "c", "d"].allSatisfy { id in users.contains { $0.userId == id && !$0.online } }
        }
        #expect(allOffline)
        // The leave events say why: d's process was lost; a, b and c may have timed out before
        // anyone could know.
        var reasons: [String: String] = [:]
        for event in try await survivor.events() where event["type"] == .string("leave") {
            reasons[event["userId"]?.string ?? ""] = event["reason"]?.string
        }
        #expect(reasons["d"] == "server_lost", "\(reasons)")
        for user in ["a", "b", "c"] { #expect(["timeout", "server_lost"].contains(reasons[user]), "\(user): \(reasons)") }
        for event in await view.wentOffline {
            let deadline = lastBeat[event.userId]! + 2_500
            // Never later than the real deadline could have been, and on time (deadline + lease + a tick).
            #expect(event.lastDisconnected <= deadline, "\(event.userId): \(event.lastDisconnected) after \(deadline)")
            #expect(event.arrivedAt <= max(deadline, killedAt) + Int64(Cluster.lease * 1_000) + 1_500)
        }
        let listing = try await survivor.listRoom()
        #expect(listing.users.first { $0.userId == "anchor" }?.data == .object(["round": .integer(2)]))
        #expect(listing.users.first { $0.userId == "anchor" }?.online == true)
        let brokenChain = await view.brokenChain
        #expect(brokenChain.isEmpty, "\(brokenChain)")
    }

    @Test func clientsOfAStoppedProcessMoveToAnotherWithoutFlickeringOffline() async throws {
        var cluster = try await Cluster()
        for _ in 0..<3 { try await cluster.start() }
        let stopping = ProcessClient(port: cluster.port(0))
        let next = ProcessClient(port: cluster.port(1))
        let tokens = try await stopping.heartbeat(user: "mover", session: "m-1", interval: 1_000)
        let view = try await SubscriberView(port: cluster.port(2), roomToken: tokens.roomToken)
        for _ in 0..<3 {
            _ = try await stopping.heartbeat(user: "mover", session: "m-1", interval: 1_000)
            try await Task.sleep(for: .milliseconds(300))
        }
        let onlineSince = try await next.listRoom().users.first { $0.userId == "mover" }?.onlineSince
        kill(cluster.servers[0].process.processIdentifier, SIGTERM)
        #expect(try await cluster.servers[0].waitForExit() == 0)
        // The client reconnects elsewhere within its 2.5 × interval and keeps going.
        try await Task.sleep(for: .milliseconds(800))
        let end = ContinuousClock.now + .seconds(4)
        while ContinuousClock.now < end {
            _ = try await next.heartbeat(user: "mover", session: "m-1", interval: 1_000)
            _ = await view.follow(timeout: .milliseconds(300)) { _ in false }
        }
        let flickers = await view.wentOffline.map(\.userId)
        #expect(flickers.isEmpty, "the mover flickered offline: \(flickers)")
        let mover = try await next.listRoom().users.first { $0.userId == "mover" }
        #expect(mover?.online == true && mover?.onlineSince == onlineSince)
    }

    @Test func aDatabaseRestartUnderLoadLosesNothingAndExpiresNobody() async throws {
        guard let folder = ProcessInfo.processInfo.environment["PRESENCE_TEST_POSTGRES_FOLDER"] else {
            Issue.record("PRESENCE_TEST_POSTGRES_FOLDER is not set")
            return
        }
        var cluster = try await Cluster()
        try await cluster.start()
        try await cluster.start()
        let clients = [ProcessClient(port: cluster.port(0)), ProcessClient(port: cluster.port(1))]
        let users = (0..<6).map { "user\($0)" }
        for (index, user) in users.enumerated() {
            _ = try await clients[index % 2].heartbeat(user: user, session: "\(user)-1", interval: 4_000)
        }
        let before = try await clients[0].listRoom()
        let acknowledged = Mutex<[String: Int]>([:])
        let stop = Mutex(false)
        // Heartbeats and data updates keep coming through both processes during the restart.
        let load = Task {
            var round = 0
            while !stop.withLock({ $0 }) {
                round += 1
                for (index, user) in users.enumerated() {
                    let client = clients[(index + round) % 2]
                    _ = try? await client.call(
                        "POST", "/api/heartbeat", body: #"{"roomId":"room","userId":"\#(user)","sessionId":"\#(user)-1","interval":4000}"#)
                    let update = try? await client.call(
                        "PUT", "/api/rooms/room/users/\(user)/data", body: "\(round)", admin: true)
                    if update?.status == 200 { acknowledged.withLock { $0[user] = round } }
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        try await Task.sleep(for: .seconds(1))
        let postmasterBefore = try postmasterId(folder)
        let status = try await offThePool { try runToCompletion("scripts/postgres.sh", ["restart", folder]) }
        #expect(status == 0)
        // Both processes serve again on their own.
        for client in clients {
            let end = ContinuousClock.now + .seconds(20)
            while (try? await client.call("GET", "/health"))?.status != 200 {
                guard ContinuousClock.now < end else { throw TestFailure("process on :\(client.port) never recovered") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        try await Task.sleep(for: .seconds(2))
        stop.withLock { $0 = true }
        await load.value
        let after = try await clients[1].listRoom()
        // Nobody went offline for the outage: same online-since as before it.
        for user in users {
            let was = before.users.first { $0.userId == user }!
            let now = after.users.first { $0.userId == user }!
            #expect(now.online && now.onlineSince == was.onlineSince, "\(user) was \(was), is \(now)")
            // The last acknowledged update is there (a later one may have landed without its answer).
            if let round = acknowledged.withLock({ $0[user] }), case .integer(let stored) = now.data {
                #expect(stored >= Int64(round))
            }
        }
        #expect(try await clients[0].listRoom() == after)
        // The database really restarted under the load: a new postmaster.
        #expect(try postmasterId(folder) != postmasterBefore)
    }

    @Test func aProcessCutOffFromTheDatabaseStopsServingUntilItIsBack() async throws {
        var cluster = try await Cluster()
        var components = URLComponents(string: cluster.databaseURL)!
        let relay = try await Relay(toPort: components.port!)
        components.port = relay.port
        try await cluster.start(url: components.string!)
        try await cluster.start()
        let cutOff = ProcessClient(port: cluster.port(0))
        let healthy = ProcessClient(port: cluster.port(1))
        let tokens = try await cutOff.heartbeat(user: "early", session: "e-1", interval: 60_000)
        let socket = TestSocket(port: cluster.port(0))
        _ = try await socket.subscribe(tokens.roomToken)

        relay.cut()
        let cutAt = ContinuousClock.now
        // It fences itself: the load balancer's health check sees 503, its sockets are closed with 1013.
        let close = try await socket.closeFrame(timeout: .seconds(10))
        #expect(close?.closeCode == .unknown(1013))
        #expect(ContinuousClock.now - cutAt < .seconds(Cluster.lease * 3))
        #expect(try await cutOff.call("GET", "/health").status == 503)
        // The operator's scrape still answers, and says why.
        let scrape = try await cutOff.call("GET", "/metrics")
        #expect(scrape.status == 200 && metricValue("presence_postgres_serving", in: scrape.body) == 0)
        #expect(try await cutOff.call(
            "POST", "/api/heartbeat", body: #"{"roomId":"room","userId":"early","sessionId":"e-1","interval":60000}"#
        ).status == 503)
        // The other process serves on, and takes over expiry if the cut-off one had it.
        _ = try await healthy.heartbeat(user: "later", session: "l-1", interval: 60_000)
        #expect(try await healthy.listRoom().users.map(\.userId) == ["early", "later"])

        relay.mend()
        let end = ContinuousClock.now + .seconds(15)
        while (try? await cutOff.call("GET", "/health"))?.status != 200 {
            guard ContinuousClock.now < end else { throw TestFailure("the cut-off process never served again") }
            try await Task.sleep(for: .milliseconds(100))
        }
        // Back, it shows what happened meanwhile.
        #expect(try await cutOff.listRoom() == healthy.listRoom())
    }

    /// Three processes share the event log: every event is delivered once in all, not once per
    /// process, in order, and the leader's SIGKILL midway loses nothing (another takes over from
    /// the stored cursor; only the batch in flight may come twice).
    @Test func webhooksAreDeliveredOnceAcrossProcessesAndSurviveTheDeliverersDeath() async throws {
        let receiver = try WebhookReceiver()
        var cluster = try await Cluster()
        for _ in 0..<3 { try await cluster.start(extraArguments: ["--webhook", "\(receiver.url),\(WebhookReceiver.secret)"]) }
        let clients = cluster.servers.map { ProcessClient(port: $0.port) }
        // The endpoint is registered from the start (this read shows it).
        #expect(try await clients[2].call("GET", "/api/webhooks", admin: true).body.contains(receiver.url))
        for index in 0..<90 {
            _ = try await clients[index % 3].heartbeat(room: "r\(index % 5)", user: "u\(index)", session: "s\(index)", interval: 60_000)
        }
        try await receiver.waitFor("the first events") { receiver.acknowledgedEventIds.count >= 90 }
        var leader: Int?
        for (index, client) in clients.enumerated() where metricValue("presence_postgres_expiry_leader", in: try await client.call("GET", "/metrics").body) == 1 {
            leader = index
        }
        guard let leader else { throw TestFailure("no process leads") }
        kill(cluster.servers[leader].process.processIdentifier, SIGKILL)
        let survivors = clients.indices.filter { $0 != leader }.map { clients[$0] }
        for index in 90..<150 {
            _ = try await survivors[index % 2].heartbeat(room: "r\(index % 5)", user: "u\(index)", session: "s\(index)", interval: 60_000)
        }
        let expected = try await survivors[0].events().compactMap { $0["id"]?.string }
        #expect(expected.count == 150)
        // A new leader waits out the dead one's lease first.
        try await receiver.waitFor("every event after the takeover", timeout: .seconds(30)) {
            Set(receiver.acknowledgedEventIds).isSuperset(of: expected)
        }
        #expect(receiver.firstAcknowledgedEventIds == expected, "in order")
        #expect(receiver.acknowledgedEventIds.count - expected.count <= 100, "once in all, not once per process")
        #expect(receiver.deliveries.allSatisfy { $0.verified })
    }

    /// A watcher on one process hears of users who join and leave through another.
    @Test func watchersHearOfChangesMadeOnAnotherProcess() async throws {
        var cluster = try await Cluster()
        try await cluster.start()
        try await cluster.start()
        let writer = ProcessClient(port: cluster.port(0))
        let socket = TestSocket(port: cluster.port(1))
        socket.send(#"{"type":"watchUsers","id":1,"userIds":["alice"]}"#)
        _ = try await socket.receive(type: "users")
        let alice = try await writer.heartbeat(room: "a", user: "alice", session: "a1", interval: 60_000)
        let joined = try await socket.receive(type: "usersChanged", timeout: .seconds(10))
        #expect(joined["users"] == .array([.object([
            "userId": .string("alice"), "online": .bool(true), "away": .bool(false), "lastDisconnected": .integer(0),
            "rooms": .integer(1),
        ])]))
        _ = try await writer.call("POST", "/api/disconnect", body: #"{"sessionToken":"\#(alice.sessionToken)"}"#)
        let left = try await socket.receive(type: "usersChanged", timeout: .seconds(10))
        guard case .array(let users)? = left["users"] else { throw TestFailure("\(left)") }
        #expect(users.first?["online"] == .bool(false))
    }
}
