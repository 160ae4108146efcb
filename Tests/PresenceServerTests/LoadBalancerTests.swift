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
        let listenPort = try freePort()
        var configuration = try String(contentsOfFile: "deploy/nginx.conf", encoding: .utf8)
        for (index, example) in ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"].enumerated() {
            #expect(configuration.contains(example))
            configuration = configuration.replacingOccurrences(of: example, with: "127.0.0.1:\(cluster.port(index))")
        }
        #expect(configuration.contains("listen 127.0.0.1:8080;"))
        configuration = configuration.replacingOccurrences(of: "listen 127.0.0.1:8080;", with: "listen 127.0.0.1:\(listenPort);")
        let prefix = temporaryDirectory(named: "nginx")
        try configuration.write(toFile: prefix + "/nginx.conf", atomically: true, encoding: .utf8)
        let nginx = Process()
        nginx.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
        nginx.arguments = [
            "-p", prefix, "-c", prefix + "/nginx.conf",
            "-g", "daemon off; master_process off; pid \(prefix)/nginx.pid; error_log \(prefix)/error.log;",
        ]
        nginx.standardOutput = FileHandle.nullDevice
        nginx.standardError = FileHandle.nullDevice
        try nginx.run()
        defer { kill(nginx.processIdentifier, SIGKILL) }
        let balanced = ProcessClient(port: listenPort)
        let end = ContinuousClock.now + .seconds(10)
        while (try? await balanced.call("GET", "/health"))?.status != 200 {
            guard ContinuousClock.now < end, nginx.isRunning else {
                throw TestFailure("nginx did not start: \((try? String(contentsOfFile: prefix + "/error.log", encoding: .utf8)) ?? "")")
            }
            try await Task.sleep(for: .milliseconds(50))
        }

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
