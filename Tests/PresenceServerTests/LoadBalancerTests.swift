import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `deploy/nginx.conf`, run as it is (only its ports changed) in front of three real processes
/// on one PostgreSQL: the example in the README must work.
@Suite(.enabled(if: Cluster.url != nil, "needs the PostgreSQL server of scripts/test.sh"))
struct LoadBalancerTests {
    @Test func theExampleNginxConfigurationServesThreeProcesses() async throws {
        var cluster = try await Cluster()
        for _ in 0..<3 { try await cluster.start(extraArguments: ["--trusted-proxy", "127.0.0.1"]) }
        let nginx = try await ShippedNginx(upstreams: (0..<3).map { cluster.port($0) })
        defer { nginx.stop() }
        let listenPort = nginx.port
        let balanced = ProcessClient(port: listenPort)

        // A subscriber through the balancer sees joins that land on any of the processes.
        let first = try await balanced.heartbeat(user: "u0", session: "s0", interval: 60_000)
        let view = try await SubscriberView(port: listenPort, roomToken: first.roomToken)
        for index in 1..<30 {
            _ = try await balanced.heartbeat(user: "u\(index)", session: "s\(index)", interval: 60_000)
        }
        #expect(try await balanced.listRoom().users.count == 30)
        #expect(await view.follow(timeout: .seconds(10)) { $0.count == 30 })
        let brokenChain = await view.brokenChain
        #expect(brokenChain.isEmpty)

        // One process dies: the balancer sends the calls to the others, and nothing fails.
        kill(cluster.servers[0].process.processIdentifier, SIGKILL)
        var statuses: [Int] = []
        for index in 30..<50 {
            let reply = try await balanced.call(
                "POST", "/api/heartbeat", body: #"{"roomId":"room","userId":"u\#(index)","sessionId":"s\#(index)","interval":60000}"#)
            statuses.append(reply.status)
        }
        #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
        #expect(try await balanced.listRoom().users.count == 50)
    }
}

/// The shipped `deploy/nginx.conf` in front of one real server process, tried by a client that
/// lies about its address and by upgrades on connections nginx keeps alive.
@Suite struct ShippedNginxTests {
    static let request = "GET /api/list?roomToken=r_none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"

    /// The server reads only X-Forwarded-For, which nginx appends to; the file clears Forwarded,
    /// which nginx would pass on as the client wrote it. Clients at 127.0.0.2–5, nginx at 127.0.0.1.
    @Test func aClientCannotChooseItsAddressThroughTheShippedProxy() async throws {
        let server = try ServerProcess(executable: presenceServerExecutable, arguments: [
            "--port", "0", "--store", "memory", "--admin-key", adminKey, "--trusted-proxy", "127.0.0.1", "--rate-limit", "5",
            "--max-connections-per-address", "3",
        ])
        try await server.waitUntilListening()
        let nginx = try await ShippedNginx(upstreams: [server.port, server.port, server.port])
        defer { nginx.stop() }

        // WebSockets: each claims another address; three may be open from one.
        var sockets: [RawWebSocket] = []
        for index in 0..<6 {
            let spoof = "Forwarded: for=10.0.\(index).1\r\nX-Forwarded-For: 10.0.\(index).1\r\n"
            sockets.append(try await offThePool { try RawWebSocket(port: nginx.port, extraHeaders: spoof, source: "127.0.0.4") })
        }
        var open = 0
        for socket in sockets {
            try socket.sendText(RawWebSocket.heartbeat)
            if try await offThePool({ socket.readFrame() })?.opcode == 1 { open += 1 }
        }
        #expect(open == 3)

        // Requests: each claims another address; the budget (5/s, 10 at once) is the real one's.
        var statuses: [String] = []
        for index in 0..<20 {
            let spoof = "Forwarded: for=10.0.\(index).1\r\nX-Forwarded-For: 10.0.\(index).1\r\n"
            let answer = try await RawWebSocket.exchange(port: nginx.port, Array((Self.request + spoof + "\r\n").utf8), source: "127.0.0.2")
            statuses.append(String(answer?.split(separator: " ").dropFirst().first ?? "none"))
        }
        #expect(statuses.filter { $0 == "200" }.count <= 12, "\(statuses)")
        #expect(statuses.contains("429"), "\(statuses)")

        // Claiming another client's address spends one's own budget, not theirs.
        for _ in 0..<15 {
            let claim = "Forwarded: for=127.0.0.3\r\nX-Forwarded-For: 127.0.0.3\r\n"
            _ = try await RawWebSocket.exchange(port: nginx.port, Array((Self.request + claim + "\r\n").utf8), source: "127.0.0.5")
        }
        let victim = try await RawWebSocket.exchange(port: nginx.port, Array((Self.request + "\r\n").utf8), source: "127.0.0.3")
        #expect(victim?.hasPrefix("HTTP/1.1 200") == true, "\(victim ?? "no answer")")
        server.process.terminate()
    }

    /// nginx keeps upstream connections alive for plain requests; an upgrade on one of them would
    /// be a later request of its connection, which the server answers with 307 (and browsers do
    /// not follow). The shipped file gives upgrades connections of their own: every one is a 101.
    @Test func upgradesAfterKeptAliveRequestsAreUpgraded() async throws {
        let server = try ServerProcess(executable: presenceServerExecutable, arguments: [
            "--port", "0", "--store", "memory", "--admin-key", adminKey, "--trusted-proxy", "127.0.0.1",
        ])
        try await server.waitUntilListening()
        let nginx = try await ShippedNginx(upstreams: [server.port, server.port, server.port])
        defer { nginx.stop() }
        let balanced = ProcessClient(port: nginx.port)
        for _ in 0..<20 { #expect(try await balanced.call("GET", "/health").status == 200) }
        var refused: [String] = []
        for _ in 0..<20 {
            do {
                let socket = try await offThePool { try RawWebSocket(port: nginx.port) }
                try socket.sendText(RawWebSocket.heartbeat)
                #expect(try await offThePool { socket.readFrame() }?.opcode == 1)
            } catch {
                refused.append("\(error)")
            }
        }
        #expect(refused.isEmpty, "\(refused)")
        server.process.terminate()
    }
}

/// `deploy/nginx.conf` as shipped, only its ports changed: `upstreams` (three, repeats allowed)
/// for the example's 8081–8083, a free port for its 8080. Stopped with `stop()`.
struct ShippedNginx {
    let port: Int
    let process = Process()

    init(upstreams: [Int]) async throws {
        precondition(upstreams.count == 3)
        port = try freePort()
        var configuration = try String(contentsOfFile: "deploy/nginx.conf", encoding: .utf8)
        for (index, example) in ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"].enumerated() {
            guard configuration.contains(example) else { throw TestFailure("deploy/nginx.conf no longer names \(example)") }
            configuration = configuration.replacingOccurrences(of: example, with: "127.0.0.1:\(upstreams[index])")
        }
        guard configuration.contains("listen 127.0.0.1:8080;") else { throw TestFailure("deploy/nginx.conf no longer listens on 8080") }
        configuration = configuration.replacingOccurrences(of: "listen 127.0.0.1:8080;", with: "listen 127.0.0.1:\(port);")
        let prefix = temporaryDirectory(named: "nginx")
        try configuration.write(toFile: prefix + "/nginx.conf", atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
        process.arguments = [
            "-p", prefix, "-c", prefix + "/nginx.conf",
            "-g", "daemon off; master_process off; pid \(prefix)/nginx.pid; error_log \(prefix)/error.log;",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let balanced = ProcessClient(port: port)
        let end = ContinuousClock.now + .seconds(10)
        while (try? await balanced.call("GET", "/health"))?.status != 200 {
            guard ContinuousClock.now < end, process.isRunning else {
                stop()
                throw TestFailure("nginx did not start: \((try? String(contentsOfFile: prefix + "/error.log", encoding: .utf8)) ?? "")")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}
