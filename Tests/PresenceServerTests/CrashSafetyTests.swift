import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GRDB
import Synchronization
import Testing
import PresenceServer
import PresenceStore

/// The real server under load, killed with SIGKILL at random moments and restarted:
/// everything it acknowledged is still there, and the file is never corrupt.
@Suite struct CrashSafetyTests {
    /// What one worker's user should look like, from the operations the server acknowledged.
    struct UserModel: Equatable, Sendable {
        var online = false
        var data: Int64?
    }

    enum Operation: Sendable {
        case join
        case update(Int64)
        case leave

        func applied(to model: UserModel) -> UserModel {
            var model = model
            switch self {
            case .join: model.online = true
            case .update(let value): model.data = value
            case .leave: model.online = false
            }
            return model
        }
    }

    /// One client: runs join / update / leave in turn until the server dies.
    final class Worker: @unchecked Sendable {
        let userId: String
        let port: Int
        var acknowledged = UserModel()
        var inFlight: Operation?
        var sessionToken: String?
        var counter: Int64 = 0
        /// Read by the test while the worker runs.
        let acknowledgedCount = Atomic<Int>(0)

        init(userId: String, port: Int, startingFrom model: UserModel) {
            self.userId = userId
            self.port = port
            self.acknowledged = model
        }

        func post(_ path: String, _ body: String, session: URLSession) async throws {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            request.httpMethod = "POST"
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            let (data, response) = try await session.data(for: request)
            guard (response as? HTTPURLResponse)?.statusCode == 200 else { throw TestFailure("status for \(path)") }
            if path == "/api/heartbeat" {
                sessionToken = try JSONDecoder().decode(SessionTokens.self, from: data).sessionToken
            }
        }

        func run(session: URLSession) async {
            var step = 0
            while !Task.isCancelled {
                let operation: Operation
                if !acknowledged.online {
                    operation = .join
                } else if step % 3 == 2 {
                    operation = .leave
                } else {
                    counter += 1
                    operation = .update(counter)
                }
                inFlight = operation
                do {
                    switch operation {
                    case .join:
                        try await post(
                            "/api/heartbeat",
                            #"{"roomId":"crash","userId":"\#(userId)","sessionId":"\#(userId)-\#(step)","interval":300000}"#,
                            session: session)
                    case .update(let value):
                        try await post("/api/update", #"{"sessionToken":"\#(sessionToken!)","data":\#(value)}"#, session: session)
                    case .leave:
                        try await post("/api/disconnect", #"{"sessionToken":"\#(sessionToken!)"}"#, session: session)
                    }
                } catch {
                    return  // the server is gone; `inFlight` may or may not have been applied
                }
                acknowledged = operation.applied(to: acknowledged)
                acknowledgedCount.add(1, ordering: .relaxed)
                inFlight = nil
                step += 1
            }
        }

        /// The states the server may legitimately show after the crash.
        var allowed: [UserModel] {
            [acknowledged] + (inFlight.map { [$0.applied(to: acknowledged)] } ?? [])
        }
    }

    @Test func acknowledgedChangesSurviveSIGKILL() async throws {
        let directory = temporaryDirectory()
        var expected: [String: [UserModel]] = [:]
        var generator = SystemRandomNumberGenerator()
        let session = URLSession(configuration: .ephemeral)
        var totalAcknowledged = 0

        for round in 0..<3 {
            let server = try ServerProcess(arguments: ["--port", "0", "--data-dir", directory, "--admin-key", adminKey])
            try await server.waitUntilListening()
            // What the previous crash left must be what was acknowledged.
            let shown = try await roomUsers(port: server.port, session: session)
            for (userId, allowed) in expected {
                let model = shown[userId] ?? UserModel()
                #expect(allowed.contains(model), "round \(round): \(userId) shows \(model), allowed \(allowed)")
            }
            // Pin each earlier user to what was found, for the next rounds.
            for userId in expected.keys { expected[userId] = [shown[userId] ?? UserModel()] }

            let workers = (0..<12).map { Worker(userId: "round\(round)-worker\($0)", port: server.port, startingFrom: UserModel()) }
            let load = Task {
                await withTaskGroup(of: Void.self) { group in
                    for worker in workers { group.addTask { await worker.run(session: session) } }
                }
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 300...1_200, using: &generator)))
            // A machine busy with the rest of the suite may start the load late: crash only once it ran.
            let started = ContinuousClock.now
            while workers.reduce(0, { $0 + $1.acknowledgedCount.load(ordering: .relaxed) }) < 40, ContinuousClock.now - started < .seconds(20) {
                try await Task.sleep(for: .milliseconds(20))
            }
            kill(server.process.processIdentifier, SIGKILL)
            await load.value
            _ = try await server.waitForExit()
            for worker in workers {
                expected[worker.userId] = worker.allowed
                totalAcknowledged += worker.acknowledgedCount.load(ordering: .relaxed)
            }
        }
        #expect(totalAcknowledged > 100, "the load ran: \(totalAcknowledged) acknowledged operations")

        // The file the last crash left is intact.
        let database = try DatabaseQueue(path: directory + "/presence.sqlite")
        #expect(try await database.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") } == "ok")
        try database.close()

        let server = try ServerProcess(arguments: ["--port", "0", "--data-dir", directory, "--admin-key", adminKey])
        try await server.waitUntilListening()
        let shown = try await roomUsers(port: server.port, session: session)
        for (userId, allowed) in expected {
            #expect(allowed.contains(shown[userId] ?? UserModel()), "\(userId) shows \(String(describing: shown[userId])), allowed \(allowed)")
        }
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try await server.waitForExit() == 0)
    }

    func roomUsers(port: Int, session: URLSession) async throws -> [String: UserModel] {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/api/rooms/crash/users?limit=1000")!)
        request.setValue("Bearer \(adminKey)", forHTTPHeaderField: "Authorization")
        let (data, _) = try await session.data(for: request)
        let listing = try JSONDecoder().decode(RoomListing.self, from: data)
        var users: [String: UserModel] = [:]
        for record in listing.users {
            var value: Int64?
            if case .integer(let number) = record.data { value = number }
            users[record.userId] = UserModel(online: record.online, data: value)
        }
        return users
    }
}
