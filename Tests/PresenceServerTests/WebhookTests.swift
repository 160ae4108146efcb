import Crypto
import Foundation
import PresenceServer
import PresenceSQLite
import PresenceStore
import Testing

/// A real receiver (`Tests/support/webhook_receiver.py`) that checks every request with the
/// standardwebhooks package and logs it; the test switches what it answers.
final class WebhookReceiver: @unchecked Sendable {
    static let secret = "whsec_" + Data((0..<24).map { UInt8($0 * 7 + 1) }).base64EncodedString()
    let port: Int
    let url: String
    private let directory = temporaryDirectory(named: "webhook-receiver")
    private var process: Process?

    struct Delivery: Sendable {
        let status: Int
        let verified: Bool
        let id: String
        let timestamp: String
        let signature: String
        let body: String
        var eventIds: [String] {
            guard case .object(let fields)? = try? JSONParser.parse(body.utf8), case .array(let events)? = fields["events"] else { return [] }
            return events.compactMap { $0["id"]?.string }
        }
    }

    init(mode: String = "ok", start: Bool = true) throws {
        port = try freePort()
        url = "http://127.0.0.1:\(port)/hooks/presence"
        try setMode(mode)
        if start { try self.start() }
    }

    deinit { stop() }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("support/webhook_receiver.py").path
        process.arguments = ["python3", script, String(port), Self.secret, directory + "/log.jsonl", directory + "/mode"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        self.process = process
        // The receiver prints once it listens.
        _ = output.fileHandleForReading.availableData
    }

    /// How the server names this receiver's endpoint when no name is configured.
    var name: String { (try! WebhookEndpoint(url: url, secret: Self.secret)).name }

    func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func setMode(_ mode: String) throws {
        try mode.write(toFile: directory + "/mode", atomically: true, encoding: .utf8)
    }

    var deliveries: [Delivery] {
        guard let text = try? String(contentsOfFile: directory + "/log.jsonl", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let json = try? JSONParser.parse(line.utf8) else { return nil }
            return Delivery(
                status: Int(json["status"]?.integer ?? 0), verified: json["verified"] == .bool(true),
                id: json["id"]?.string ?? "", timestamp: json["timestamp"]?.string ?? "",
                signature: json["signature"]?.string ?? "", body: json["body"]?.string ?? "")
        }
    }

    /// Event ids of the acknowledged batches, in the order they were acknowledged.
    var acknowledgedEventIds: [String] { deliveries.filter { $0.status == 204 }.flatMap(\.eventIds) }

    /// The acknowledged event ids without repeats, in the order each first arrived.
    var firstAcknowledgedEventIds: [String] {
        var seen = Set<String>()
        return acknowledgedEventIds.filter { seen.insert($0).inserted }
    }

    func waitFor(_ what: String, timeout: Duration = .seconds(20), _ condition: () -> Bool) async throws {
        let start = ContinuousClock.now
        while !condition() {
            guard ContinuousClock.now - start < timeout else { throw TestFailure("webhook receiver: no \(what) within \(timeout)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// The first endpoint of `GET /api/webhooks`.
func firstEndpoint(_ client: HTTPClient) async throws -> JSONValue? {
    guard case .array(let endpoints)? = try await client.call(.get, "/api/webhooks", admin: true).json["endpoints"] else { return nil }
    return endpoints.first
}

/// Every event id the server keeps, oldest first.
func allEventIds(_ client: HTTPClient) async throws -> [String] {
    var ids: [String] = []
    var after = ""
    while true {
        let reply = try await client.call(.get, "/api/events?limit=1000" + after, admin: true)
        guard reply.status == 200, case .array(let events)? = reply.json["events"] else { throw TestFailure("events: \(reply.body)") }
        ids += events.compactMap { $0["id"]?.string }
        guard events.count == 1_000, let next = reply.json["next"]?.string else { return ids }
        after = "&after=" + next
    }
}

func fastWebhooks(_ configuration: inout PresenceServerConfiguration, _ endpoints: [WebhookEndpoint]) {
    configuration.webhooks = endpoints
    configuration.webhookTimings.firstRetry = .milliseconds(50)
    configuration.webhookTimings.maximumRetry = .milliseconds(400)
    configuration.webhookTimings.requestTimeout = .milliseconds(500)
    configuration.webhookTimings.idlePoll = .milliseconds(100)
}

@Suite(.serialized) struct WebhookTests {
    /// The signature checked a second way, by hand from the Standard Webhooks text: HMAC-SHA256
    /// with the secret's bytes over "id.timestamp.body", base64, after "v1,".
    static func verifyByHand(_ delivery: WebhookReceiver.Delivery) -> Bool {
        let key = SymmetricKey(data: Data(base64Encoded: String(WebhookReceiver.secret.dropFirst(6)))!)
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(delivery.id).\(delivery.timestamp).\(delivery.body)".utf8), using: key)
        return delivery.signature == "v1," + Data(mac).base64EncodedString()
    }

    /// A receiver that sends its answer's head and then dribbles its body used to hold its
    /// endpoint's deliveries for good, its lag reading 0.001 s. The whole exchange has a deadline,
    /// and the lag grows while the endpoint is behind.
    @Test func aReceiverThatDribblesItsAnswerIsTimedOutAndItsLagGrows() async throws {
        let receiver = try WebhookReceiver(mode: "dribble")
        try await withServer(configure: { fastWebhooks(&$0, [try! WebhookEndpoint(url: receiver.url, secret: WebhookReceiver.secret)]) }) { client in
            _ = try await client.heartbeat(user: "u", session: "s")
            let failed = "presence_webhook_deliveries_failed_total{endpoint=\"\(receiver.name)\"}"
            let deadline = ContinuousClock.now + .seconds(20)
            while try await client.metric(failed) < 2 {
                guard ContinuousClock.now < deadline else { throw TestFailure("no attempt timed out") }
                try await Task.sleep(for: .milliseconds(50))
            }
            func lag() async throws -> Double {
                try metricDouble("presence_webhook_lag_seconds{endpoint=\"\(receiver.name)\"}", in: await client.call(.get, "/metrics").body) ?? 0
            }
            let first = try await lag()
            try await Task.sleep(for: .milliseconds(600))
            let second = try await lag()
            #expect(first >= 0.4, "lag \(first) s while no delivery went through")
            #expect(second >= first + 0.5, "the lag went from \(first) s to \(second) s in 0.6 s")
            #expect(try await firstEndpoint(client)?["lagMillis"]?.integer ?? 0 >= 900)
            // The receiver mends: everything arrives.
            try receiver.setMode("ok")
            try await receiver.waitFor("the waiting event") { receiver.acknowledgedEventIds.count >= 1 }
        }
    }

    /// Webhook URLs are often capabilities (a token in the path or query, a user and password):
    /// they appear neither on the unauthenticated `/metrics` nor in the logs, which name endpoints.
    @Test func webhookURLsStayOutOfMetricsAndLogs() async throws {
        let receiver = try WebhookReceiver(mode: "fail")
        let secretURL = "http://user:pa55word@127.0.0.1:\(receiver.port)/hooks/presence?token=capability-xyz"
        let server = try ServerProcess(
            executable: presenceServerExecutable,
            arguments: [
                "--port", "0", "--store", "memory", "--admin-key", adminKey, "--webhook", "\(secretURL),\(WebhookReceiver.secret)",
            ],
            environment: ["PRESENCE_LOG_LEVEL": "info"])
        try await server.waitUntilListening()
        let client = ProcessClient(port: server.port)
        _ = try await client.heartbeat(user: "u", session: "s", interval: 60_000)
        let named = try WebhookEndpoint(url: secretURL, secret: WebhookReceiver.secret).name
        #expect(named.hasPrefix("127.0.0.1-") && named.count == "127.0.0.1-".count + 8, "\(named)")
        // Failing deliveries log warnings that name the endpoint.
        try await Task.sleep(for: .seconds(2))
        let metrics = try await client.call("GET", "/metrics").body
        #expect(metrics.contains("endpoint=\"\(named)\""))
        // HELP and TYPE name a family, once: a label there made Prometheus refuse the whole scrape.
        let comments = metrics.split(separator: "\n").filter { $0.hasPrefix("# HELP ") || $0.hasPrefix("# TYPE ") }
        #expect(!comments.contains { $0.split(separator: " ")[2].contains("{") }, "\(comments)")
        #expect(Set(comments).count == comments.count)
        #expect(metrics.contains("# TYPE presence_webhook_deliveries_failed_total counter"))
        server.process.terminate()
        _ = try await server.waitForExit()
        let rest = String(decoding: server.output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let logs = server.banner + rest + server.errorOutput
        #expect(logs.contains(named), "\(logs)")
        for secret in ["pa55word", "capability-xyz", "user:"] {
            #expect(!metrics.contains(secret), "/metrics shows \(secret)")
            #expect(!logs.contains(secret), "the log shows \(secret)")
        }
        _ = receiver
    }

    @Test func everyEventArrivesSignedBatchedInOrderAndOnce() async throws {
        let receiver = try WebhookReceiver()
        try await withServer(configure: { fastWebhooks(&$0, [try! WebhookEndpoint(url: receiver.url, secret: WebhookReceiver.secret)]) }) { client in
            for index in 0..<250 { _ = try await client.heartbeat(room: "room-\(index % 3)", user: "u\(index)", session: "s\(index)") }
            let expected = try await allEventIds(client)
            #expect(expected.count == 250)
            try await receiver.waitFor("all 250 events") { receiver.acknowledgedEventIds.count >= 250 }
            #expect(receiver.acknowledgedEventIds == expected, "every event once, in id order")
            let deliveries = receiver.deliveries
            #expect(deliveries.allSatisfy { $0.verified }, "standardwebhooks accepts every signature")
            #expect(deliveries.allSatisfy(Self.verifyByHand), "and so does the hand-made check")
            #expect(deliveries.allSatisfy { $0.eventIds.count <= 100 })
            #expect(deliveries.count >= 3)
            let body = try JSONParser.parse(deliveries[0].body.utf8)
            #expect(body["type"] == .string("presence.events"))
            let metrics = try await client.call(.get, "/metrics").body
            #expect(metrics.contains("presence_webhook_deliveries_succeeded_total{endpoint=\"\(receiver.name)\"} \(Double(deliveries.count))"))
            #expect(metricValue("presence_events_written", in: metrics) == 250)
        }
    }

    @Test func aReceiverThatFailsOrIsDownGetsEverythingOnceBack() async throws {
        let receiver = try WebhookReceiver(mode: "fail")
        try await withServer(configure: { fastWebhooks(&$0, [try! WebhookEndpoint(url: receiver.url, secret: WebhookReceiver.secret)]) }) { client in
            try await Task.sleep(for: .milliseconds(300))
            let alice = try await client.heartbeat(user: "alice", session: "a1")
            try await receiver.waitFor("retries") { receiver.deliveries.filter { $0.status == 500 }.count >= 3 }
            // Retries send the same batch under the same id.
            #expect(Set(receiver.deliveries.map(\.id)).count == 1)
            receiver.stop()
            _ = try await client.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#(alice.sessionToken)"}"#)
            _ = try await client.heartbeat(user: "bob", session: "b1")
            try await Task.sleep(for: .milliseconds(500))
            try receiver.setMode("ok")
            try receiver.start()
            let expected = try await allEventIds(client)
            try await receiver.waitFor("every event") { receiver.acknowledgedEventIds.count >= expected.count }
            #expect(receiver.acknowledgedEventIds == expected)
        }
    }

    @Test func aHangingReceiverSlowsNothingDown() async throws {
        let receiver = try WebhookReceiver(mode: "hang")
        try await withServer(configure: { fastWebhooks(&$0, [try! WebhookEndpoint(url: receiver.url, secret: WebhookReceiver.secret)]) }) { client in
            try await Task.sleep(for: .milliseconds(300))
            let start = ContinuousClock.now
            for index in 0..<200 { _ = try await client.heartbeat(user: "u\(index % 20)", session: "s\(index % 20)") }
            let elapsed = ContinuousClock.now - start
            // 200 calls against an endpoint that never answers: the calls never wait for it (waiting
            // for its 0.5 s timeout would take 100 s; a loaded machine took 11 s without waiting).
            #expect(elapsed < .seconds(30), "\(elapsed)")
            try await Task.sleep(for: .seconds(1.2))
            #expect(try await client.metric("presence_webhook_deliveries_failed_total{endpoint=\"\(receiver.name)\"}") >= 1)
            #expect(receiver.acknowledgedEventIds.isEmpty)
        }
    }

    @Test func anEndpointThatFailsTooLongStopsAndResumesWhenEnabled() async throws {
        let receiver = try WebhookReceiver(mode: "fail")
        let endpoint = try WebhookEndpoint(url: receiver.url, secret: WebhookReceiver.secret, giveUpAfter: .milliseconds(600))
        try await withServer(configure: { fastWebhooks(&$0, [endpoint]) }) { client in
            try await Task.sleep(for: .milliseconds(300))
            _ = try await client.heartbeat(user: "alice", session: "a1")
            let failed = try await client.call(.get, "/api/webhooks", admin: true)
            #expect(failed.status == 200)
            let start = ContinuousClock.now
            while try await client.metric("presence_webhook_endpoint_failed{endpoint=\"\(receiver.name)\"}") != 1 {
                guard ContinuousClock.now - start < .seconds(10) else { throw TestFailure("the endpoint never failed") }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await firstEndpoint(client)?["state"] == .string("failed"))
            // While failed, nothing is tried; the events wait.
            try receiver.setMode("ok")
            _ = try await client.heartbeat(user: "bob", session: "b1")
            let attempts = receiver.deliveries.count
            try await Task.sleep(for: .milliseconds(500))
            #expect(receiver.deliveries.count == attempts)

            #expect(try await client.call(.post, "/api/webhooks/enable", body: #"{"url":"http://nowhere.test/"}"#, admin: true).status == 404)
            #expect(try await client.call(.post, "/api/webhooks/enable", body: #"{"url":"\#(receiver.url)"}"#).status == 401)
            #expect(try await client.call(.post, "/api/webhooks/enable", body: #"{"name":"\#(receiver.name)"}"#, admin: true).status == 200)
            let expected = try await allEventIds(client)
            try await receiver.waitFor("the waiting events") { receiver.acknowledgedEventIds.count >= expected.count }
            #expect(receiver.acknowledgedEventIds == expected, "from where it stopped, in order")
            #expect(try await firstEndpoint(client)?["state"] == .string("active"))
        }
    }

    @Test func aQuickLeaveAndJoinAreSentAsNeither() async throws {
        let receiver = try WebhookReceiver()
        let endpoint = try WebhookEndpoint(url: receiver.url, secret: WebhookReceiver.secret, flapWindow: .milliseconds(800))
        try await withServer(configure: { fastWebhooks(&$0, [endpoint]) }) { client in
            try await Task.sleep(for: .milliseconds(300))
            let alice = try await client.heartbeat(user: "alice", session: "a1")
            let bob = try await client.heartbeat(user: "bob", session: "b1")
            // A reload: alice leaves and is back within the window. Bob leaves for good.
            _ = try await client.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#(alice.sessionToken)"}"#)
            _ = try await client.heartbeat(user: "alice", session: "a2")
            _ = try await client.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#(bob.sessionToken)"}"#)
            let all = try await allEventIds(client)
            #expect(all.count == 5)
            try await receiver.waitFor("bob's leave, after its window") { receiver.acknowledgedEventIds.count >= 3 }
            let kinds = receiver.deliveries.filter { $0.status == 204 }.flatMap { delivery -> [String] in
                guard case .array(let events)? = try? JSONParser.parse(delivery.body.utf8)["events"] else { return [] }
                return events.map { "\($0["userId"]?.string ?? "") \($0["type"]?.string ?? "")" }
            }
            #expect(kinds == ["alice join", "bob join", "bob leave"])
        }
    }

    /// SIGKILL with undelivered events: after the restart every one arrives, in order; only a
    /// batch in flight at the kill may come twice.
    @Test func undeliveredEventsSurviveAKill() async throws {
        let receiver = try WebhookReceiver(start: false)
        let directory = temporaryDirectory()
        let arguments = [
            "--port", "0", "--data-dir", directory, "--admin-key", adminKey,
            "--webhook", "\(receiver.url),\(WebhookReceiver.secret)",
        ]
        var server = try ServerProcess(arguments: arguments)
        try await server.waitUntilListening()
        let client = ProcessClient(port: server.port)
        for index in 0..<120 {
            _ = try await client.heartbeat(room: "room-\(index % 4)", user: "u\(index)", session: "s\(index)", interval: 60_000)
        }
        let expected = try await client.events().compactMap { $0["id"]?.string }
        #expect(expected.count == 120)
        kill(server.process.processIdentifier, SIGKILL)
        _ = try await server.waitForExit()

        try receiver.start()
        server = try ServerProcess(arguments: arguments)
        try await server.waitUntilListening()
        try await receiver.waitFor("every event after the restart", timeout: .seconds(30)) {
            Set(receiver.acknowledgedEventIds).isSuperset(of: expected)
        }
        #expect(Array(receiver.firstAcknowledgedEventIds.prefix(expected.count)) == expected, "in order")
        #expect(receiver.acknowledgedEventIds.count - Set(receiver.acknowledgedEventIds).count <= 100)
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }
}

@Suite struct WebhookConfigurationTests {
    let secret = WebhookReceiver.secret

    @Test func theFlagAndTheFileNameEndpoints() throws {
        let endpoint = try WebhookEndpoint(flag: "https://app.test/hook?a=1,2,\(secret)", flapWindow: nil, giveUpAfter: .seconds(60))
        #expect(endpoint.url == "https://app.test/hook?a=1,2" && endpoint.secret == secret)
        let file = #"[{"url":"https://a.test/1","secret":"\#(secret)"},{"url":"http://b.test/2","secret":"\#(secret)","flapSuppressionSeconds":5,"giveUpHours":0.5}]"#
        let endpoints = try WebhookEndpoint.list(fileContents: file, flapWindow: .seconds(1), giveUpAfter: .seconds(60))
        #expect(endpoints.map(\.url) == ["https://a.test/1", "http://b.test/2"])
        #expect(endpoints[0].flapWindow == .seconds(1) && endpoints[0].giveUpAfter == .seconds(60))
        #expect(endpoints[1].flapWindow == .seconds(5) && endpoints[1].giveUpAfter == .seconds(1_800))
    }

    @Test func badEndpointsAreRefusedWithTheirReason() {
        for (flag, reason) in [
            ("https://app.test/hook", "URL,SECRET"), ("ftp://app.test/x,\(secret)", "http or https"),
            ("https://app.test/x,secret", "whsec_"), ("https://app.test/x,whsec_AAAA", "16 random bytes"),
        ] {
            #expect(throws: PresenceError.self) { try WebhookEndpoint(flag: flag, flapWindow: nil, giveUpAfter: .seconds(1)) }
            do {
                _ = try WebhookEndpoint(flag: flag, flapWindow: nil, giveUpAfter: .seconds(1))
            } catch {
                #expect(error.message.contains(reason), "\(flag): \(error.message)")
            }
        }
        #expect(throws: PresenceError.self) { try WebhookEndpoint.list(fileContents: "{}", flapWindow: nil, giveUpAfter: .seconds(1)) }
        #expect(throws: PresenceError.self) {
            try WebhookEndpoint.list(fileContents: #"[{"url":"https://a.test"}]"#, flapWindow: nil, giveUpAfter: .seconds(1))
        }
    }
}
