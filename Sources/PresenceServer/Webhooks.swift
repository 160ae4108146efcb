import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PresenceStore
import ServiceLifecycle
import Synchronization

/// One receiver of every presence event, as the server is configured with it.
public struct WebhookEndpoint: Sendable, Hashable {
    /// Where events go. Often a capability (a token in its path or query, a user and password):
    /// it appears only in the admin API, never in logs or metrics, which say `name`.
    public var url: String
    /// How logs, metrics and the admin API name the endpoint: the configured name, or the URL's
    /// host and a short hash of the whole URL (`hooks.example.com-3f2a9c1d`), which tells
    /// endpoints apart without giving away their secrets.
    public var name: String
    /// `whsec_` + base64 of the signing key (Standard Webhooks).
    public var secret: String
    /// A `leave` followed within this window by a `join` of the same user in the same room is
    /// delivered as neither; nil or zero delivers every event.
    public var flapWindow: Duration?
    /// How long failing deliveries are retried before the endpoint is marked failed.
    public var giveUpAfter: Duration

    public init(
        url: String, secret: String, name: String? = nil, flapWindow: Duration? = nil, giveUpAfter: Duration = .seconds(86_400)
    ) throws(PresenceError) {
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = parsed.host
        else {
            // Not the URL itself: this message reaches the log.
            throw .invalidArgument("a webhook URL must be an http or https URL with a host")
        }
        if let name {
            guard !name.isEmpty, name.utf8.count <= 64, name.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 32 && $0 != "\"" && $0 != "\\" }) else {
                throw .invalidArgument("a webhook name is 1 to 64 printable ASCII characters, without spaces, quotes or backslashes")
            }
        }
        _ = try WebhookSignature(secret: secret)
        self.url = url
        self.name = name ?? host + "-" + SHA256.hash(data: Data(url.utf8)).prefix(4).map { String(format: "%02x", $0) }.joined()
        self.secret = secret
        self.flapWindow = flapWindow
        self.giveUpAfter = giveUpAfter
    }
}

/// Standard Webhooks signing: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")).
public struct WebhookSignature: Sendable {
    private let key: SymmetricKey

    public init(secret: String) throws(PresenceError) {
        guard secret.hasPrefix("whsec_"), let bytes = Data(base64Encoded: String(secret.dropFirst("whsec_".count))),
            bytes.count >= 16
        else {
            throw .invalidArgument("a webhook secret is whsec_ followed by the base64 of at least 16 random bytes")
        }
        key = SymmetricKey(data: bytes)
    }

    public func sign(id: String, timestamp: Int64, body: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(id).\(timestamp).\(body)".utf8), using: key)
        return "v1," + Data(mac).base64EncodedString()
    }
}

/// Which events of a page go out, with flap suppression: a `leave` whose window has not passed
/// yet holds back itself and everything after it (order per endpoint is kept), unless the page
/// already shows the `join` that cancels it.
enum FlapFilter {
    struct Selection: Equatable {
        /// The events to deliver, in order.
        var events: [PresenceEvent]
        /// The last sequence this selection accounts for (delivered or suppressed); nil for none.
        var through: UInt64?
        /// When a held-back leave's window ends, if one was held back.
        var holdUntil: Int64?
    }

    /// Takes at most `batchSize` events to deliver from `page` (read with a look-ahead beyond the
    /// batch); `pageIsComplete` says that no event follows the page yet.
    static func select(
        _ page: [PresenceEvent], window: Int64, now: Int64, batchSize: Int, pageIsComplete: Bool
    ) -> Selection {
        var selected: [PresenceEvent] = []
        var suppressed = Set<UInt64>()
        var through: UInt64?
        for (index, event) in page.enumerated() {
            if suppressed.contains(event.sequence) {
                through = event.sequence
                continue
            }
            if window > 0, event.kind == .leave {
                let next = page[(index + 1)...].first {
                    $0.roomId.isSameID(as: event.roomId) && $0.userId.isSameID(as: event.userId) && ($0.kind == .join || $0.kind == .removed)
                }
                if let next, next.kind == .join, next.at - event.at <= window {
                    suppressed.insert(next.sequence)
                    through = event.sequence
                    continue
                }
                if next == nil {
                    let windowEnds = event.at + window
                    if now < windowEnds {
                        return Selection(events: selected, through: through, holdUntil: windowEnds)
                    }
                    // The join may lie past the page: read again from this leave. A leave that
                    // starts the page is decided on what the page shows, or delivery would stall.
                    if !pageIsComplete, page.last!.at <= windowEnds, index > 0 {
                        return Selection(events: selected, through: through, holdUntil: nil)
                    }
                }
            }
            guard selected.count < batchSize else { break }
            selected.append(event)
            through = event.sequence
        }
        return Selection(events: selected, through: through, holdUntil: nil)
    }
}

/// Delivery figures of one endpoint, for `/metrics` and `GET /api/webhooks`.
struct WebhookFigures: Sendable {
    var attempted = 0
    var succeeded = 0
    var failed = 0
    /// When the oldest event not yet delivered happened, as last seen; nil when none waited.
    /// Kept as a time, not an age, so the lag read while a delivery is stuck keeps growing.
    var oldestUndeliveredAt: Int64?
    var failedAt: Int64?
    /// When a leave held back for flap suppression may go out.
    var holdUntil: Int64?

    /// Age of the oldest undelivered event at `now` (milliseconds); 0 when none waits.
    func lagMillis(now: Int64) -> Int64 {
        oldestUndeliveredAt.map { max(0, now - $0) } ?? 0
    }
}

/// The webhook endpoints' state in this process, shared by the delivery loops, the admin calls
/// and `/metrics`.
public final class WebhookRegistry: Sendable {
    let endpoints: [WebhookEndpoint]
    private let figures: Mutex<[String: WebhookFigures]>
    /// Wake each endpoint's delivery loop: new events, the endpoint enabled again. An alarm rung
    /// with the earliest possible deadline always wakes its loop, or its next wait.
    let alarms: [String: DeadlineAlarm]
    /// The events' clock, which the lag is measured on.
    let clock: any WallClock

    public init(endpoints: [WebhookEndpoint], clock: any WallClock = SystemWallClock()) {
        self.endpoints = endpoints
        self.clock = clock
        figures = Mutex(Dictionary(endpoints.map { ($0.url, WebhookFigures()) }, uniquingKeysWith: { first, _ in first }))
        alarms = Dictionary(endpoints.map { ($0.url, DeadlineAlarm()) }, uniquingKeysWith: { first, _ in first })
    }

    func update(_ url: String, _ body: (inout WebhookFigures) -> Void) {
        figures.withLock { body(&$0[url, default: WebhookFigures()]) }
    }

    func figures(of url: String) -> WebhookFigures { figures.withLock { $0[url] ?? WebhookFigures() } }

    func wakeAll() {
        for alarm in alarms.values { alarm.note(deadline: .min) }
    }

    var gauges: [StoreGauge] {
        var gauges: [StoreGauge] = []
        let now = clock.nowMillis()
        for endpoint in endpoints {
            let figures = figures(of: endpoint.url)
            let label = "{endpoint=\"\(PrometheusLabel.escape(endpoint.name))\"}"
            gauges.append(StoreGauge("presence_webhook_deliveries_attempted_total" + label, Double(figures.attempted), help: "webhook batches sent, retries included"))
            gauges.append(StoreGauge("presence_webhook_deliveries_succeeded_total" + label, Double(figures.succeeded), help: "webhook batches acknowledged with 2xx"))
            gauges.append(StoreGauge("presence_webhook_deliveries_failed_total" + label, Double(figures.failed), help: "webhook attempts that failed (error, timeout or not 2xx)"))
            gauges.append(StoreGauge("presence_webhook_lag_seconds" + label, Double(figures.lagMillis(now: now)) / 1_000, help: "age of the oldest undelivered event"))
            gauges.append(StoreGauge("presence_webhook_endpoint_failed" + label, figures.failedAt == nil ? 0 : 1, help: "1 when deliveries gave up until an admin enables the endpoint"))
        }
        return gauges
    }
}

enum PrometheusLabel {
    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}

/// Timings of deliveries; tests shorten them.
public struct WebhookTimings: Sendable {
    /// No answer within this is a failed attempt.
    public var requestTimeout: Duration = .seconds(10)
    public var firstRetry: Duration = .seconds(1)
    public var maximumRetry: Duration = .seconds(300)
    /// How often an idle loop looks for events it was not woken for (another process's, a lease).
    public var idlePoll: Duration = .seconds(1)
    public init() {}
}

/// Delivers the event log to one endpoint: at least once, in order, batched, with backoff.
/// Its only state that matters is the stored cursor, so a crash or restart goes on from where
/// the last acknowledged batch ended.
struct WebhookDelivery: Sendable {
    static let batchSize = 100
    /// Events read beyond a batch, so a leave near its end can find the join that cancels it.
    static let lookAhead = 400

    let endpoint: WebhookEndpoint
    let store: any PresenceStore
    let registry: WebhookRegistry
    let client: HTTPClient
    let timings: WebhookTimings
    let logger: Logger

    func run() async {
        let signature = try! WebhookSignature(secret: endpoint.secret)  // checked when the endpoint was made
        let alarm = registry.alarms[endpoint.url]!
        let clock = store.clock
        while !Task.isCancelled {
            // Wakes from here on count: they may be for events the read below does not see.
            alarm.beginCycle()
            do {
                if try await deliverOnce(signature: signature) == true { continue }
            } catch is CancellationError {
                return
            } catch {
                logger.warning(
                    "webhook delivery could not read the event log", metadata: ["endpoint": "\(endpoint.name)", "error": "\(error)"])
            }
            var pause = timings.idlePoll.milliseconds
            if let holdUntil = registry.figures(of: endpoint.url).holdUntil {
                pause = max(1, min(pause, holdUntil - clock.nowMillis()))
            }
            // Sleep until woken or the pause ends, whichever is first.
            let wakeAt = clock.nowMillis() + pause
            await withTaskGroup(of: Void.self) { group in
                group.addTask { _ = try? await clock.sleep(untilMillis: wakeAt) }
                group.addTask { await alarm.wait(earlierThan: .max) }
                _ = await group.next()
                group.cancelAll()
            }
        }
    }

    /// One step: true when a batch went out (look again at once), false when there was nothing to
    /// send, nil when this process does not deliver or the endpoint is failed.
    private func deliverOnce(signature: WebhookSignature) async throws -> Bool? {
        guard store.deliversWebhooks else { return nil }
        var cursor = try await store.webhookCursor(endpoint: endpoint.url)
        registry.update(endpoint.url) { $0.failedAt = cursor.failedAt }
        let now = store.clock.nowMillis()
        guard cursor.failedAt == nil else {
            // A failed endpoint's lag keeps growing, and the metric should show it.
            let oldest = try? await store.events(after: cursor.deliveredThrough, roomId: nil, limit: 1).events.first
            registry.update(endpoint.url) { $0.oldestUndeliveredAt = oldest?.at }
            return nil
        }
        let page: EventPage
        do {
            page = try await store.events(after: cursor.deliveredThrough, roomId: nil, limit: Self.batchSize + Self.lookAhead)
        } catch let error as PresenceError where error.code == "events_expired" {
            let oldest = try await store.events(after: nil, roomId: nil, limit: 1)
            logger.error(
                "webhook endpoint fell behind the event retention: the forgotten events are skipped",
                metadata: ["endpoint": "\(endpoint.name)", "from": "\(PresenceEvent.id(forSequence: cursor.deliveredThrough))"])
            cursor.deliveredThrough = oldest.events.first.map { $0.sequence - 1 } ?? oldest.next
            try await store.saveWebhookCursor(cursor, endpoint: endpoint.url)
            return true
        }
        registry.update(endpoint.url) { $0.oldestUndeliveredAt = page.events.first?.at }
        let window = endpoint.flapWindow?.milliseconds ?? 0
        let selection = FlapFilter.select(
            page.events, window: window, now: now, batchSize: Self.batchSize,
            pageIsComplete: page.events.count < Self.batchSize + Self.lookAhead)
        registry.update(endpoint.url) { $0.holdUntil = selection.holdUntil }
        guard let through = selection.through else { return false }
        if !selection.events.isEmpty {
            guard try await deliver(selection.events, signature: signature, cursor: &cursor) else { return nil }
        }
        cursor.deliveredThrough = through
        try await store.saveWebhookCursor(cursor, endpoint: endpoint.url)
        return true
    }

    /// Sends one batch until it is acknowledged (true) or the give-up time passes (false: the
    /// endpoint is marked failed), or this process stops delivering (false: another one goes on
    /// from the stored cursor). Later batches wait, so order holds.
    private func deliver(_ events: [PresenceEvent], signature: WebhookSignature, cursor: inout WebhookCursor) async throws -> Bool {
        var writer = JSONWriter(capacity: 256 * events.count)
        writer.object { object in
            object.field("type", "presence.events")
            object.field("events") { $0.write(events) }
        }
        let body = writer.output
        // The same id on every retry and after a restart: the batch is named by its events.
        let batchId = "msg_\(events.first!.id)_\(events.last!.id)"
        let clock = store.clock
        let firstFailure = clock.nowMillis()
        var backoff = timings.firstRetry.milliseconds
        var attempt = 0
        while true {
            try Task.checkCancellation()
            // A process that lost the delivery lease while retrying must not race the new deliverer.
            guard store.deliversWebhooks else { return false }
            attempt += 1
            let timestamp = clock.nowMillis() / 1_000
            var request = HTTPClientRequest(url: endpoint.url)
            request.method = .POST
            request.headers.add(name: "content-type", value: "application/json")
            request.headers.add(name: "user-agent", value: "presence-server")
            request.headers.add(name: "webhook-id", value: batchId)
            request.headers.add(name: "webhook-timestamp", value: String(timestamp))
            request.headers.add(name: "webhook-signature", value: signature.sign(id: batchId, timestamp: timestamp, body: body))
            request.body = .bytes(ByteBuffer(string: body))
            registry.update(endpoint.url) { $0.attempted += 1 }
            var problem: String
            do {
                let status = try await exchange(request)
                if (200..<300).contains(status) {
                    registry.update(endpoint.url) { $0.succeeded += 1 }
                    return true
                }
                problem = "HTTP \(status)"
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                problem = "\(error)"
            }
            registry.update(endpoint.url) { $0.failed += 1 }
            let now = clock.nowMillis()
            if now - firstFailure >= endpoint.giveUpAfter.milliseconds {
                cursor.failedAt = now
                try await store.saveWebhookCursor(cursor, endpoint: endpoint.url)
                registry.update(endpoint.url) { $0.failedAt = now }
                logger.error(
                    "webhook endpoint failed: deliveries stop until an admin enables it (POST /api/webhooks/enable)",
                    metadata: ["endpoint": "\(endpoint.name)", "attempts": "\(attempt)", "last": "\(problem)"])
                return false
            }
            // Full jitter on an exponential step: retries of many servers do not arrive together.
            let pause = Int64.random(in: backoff / 2...backoff)
            logger.warning(
                "webhook delivery failed; retrying",
                metadata: ["endpoint": "\(endpoint.name)", "attempt": "\(attempt)", "error": "\(problem)", "retryInMs": "\(pause)"])
            try await clock.sleep(untilMillis: now + pause)
            backoff = min(backoff * 2, timings.maximumRetry.milliseconds)
        }
    }
}

/// A delivery attempt that took longer than its timeout, head and body together.
struct WebhookExchangeTimedOut: Error, CustomStringConvertible {
    let timeout: Duration
    var description: String { "no whole answer within \(timeout)" }
}

extension WebhookDelivery {
    /// Posts `request` and reads its whole answer within the request timeout: the client's own
    /// timeout covers the answer's head only, so a receiver that sent its head and then dribbled
    /// its body held its endpoint's deliveries for good. The answer's status.
    fileprivate func exchange(_ request: HTTPClientRequest) async throws -> UInt {
        let limit = timings.requestTimeout
        return try await withThrowingTaskGroup(of: UInt?.self) { group in
            group.addTask { [client] in
                let response = try await client.execute(request, timeout: .milliseconds(limit.milliseconds))
                // What the receiver says in its body does not matter, only that it finished saying it.
                _ = try? await response.body.collect(upTo: 64 * 1024)
                try Task.checkCancellation()
                return response.status.code
            }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let status = first else { throw WebhookExchangeTimedOut(timeout: limit) }
            return status
        }
    }
}

/// Runs one delivery loop per endpoint for as long as the server runs.
struct WebhookService: Service {
    let registry: WebhookRegistry
    let store: any PresenceStore
    let timings: WebhookTimings
    let logger: Logger

    func run() async throws {
        guard !registry.endpoints.isEmpty else {
            try? await gracefulShutdown()
            return
        }
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.timeout.connect = .milliseconds(timings.requestTimeout.milliseconds)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        await cancelWhenGracefulShutdown {
            // Every process registers the endpoints at once, leading or not: an endpoint gets the
            // events from when a server first ran with it, not from when one first delivered to it.
            for endpoint in registry.endpoints {
                while (try? await store.webhookCursor(endpoint: endpoint.url)) == nil {
                    guard (try? await Task.sleep(for: timings.idlePoll)) != nil else { return }
                }
            }
            await withTaskGroup(of: Void.self) { group in
                // Committed changes wake the loops; they read the log, not the changes.
                group.addTask {
                    for await _ in store.roomChanges() { registry.wakeAll() }
                }
                for endpoint in registry.endpoints {
                    group.addTask {
                        await WebhookDelivery(
                            endpoint: endpoint, store: store, registry: registry, client: client, timings: timings,
                            logger: logger
                        ).run()
                    }
                }
                await group.waitForAll()
            }
        }
        try? await client.shutdown()
    }
}

extension WebhookEndpoint {
    /// `URL,SECRET` as the repeatable `--webhook` flag gives it. The secret is the part after the
    /// last comma, since a URL's query may hold commas and a secret never does.
    public init(flag: String, flapWindow: Duration?, giveUpAfter: Duration) throws(PresenceError) {
        guard let comma = flag.lastIndex(of: ",") else {
            // Not the flag itself: it holds the secret, and this message reaches the log.
            throw .invalidArgument("--webhook takes URL,SECRET (the secret as whsec_…)")
        }
        try self.init(
            url: String(flag[..<comma]).trimmingCharacters(in: .whitespaces),
            secret: String(flag[flag.index(after: comma)...]).trimmingCharacters(in: .whitespaces),
            flapWindow: flapWindow, giveUpAfter: giveUpAfter)
    }

    /// The endpoints of a webhooks file: a JSON array of `{"url", "secret", "name"?,
    /// "flapSuppressionSeconds"?, "giveUpHours"?}`; what an entry leaves out comes from the flags.
    public static func list(fileContents: String, flapWindow: Duration?, giveUpAfter: Duration) throws(PresenceError) -> [WebhookEndpoint] {
        let json: JSONValue
        do {
            json = try JSONParser.parse(fileContents.utf8)
        } catch {
            throw .invalidArgument("the webhooks file is not JSON: \(error)")
        }
        guard case .array(let entries) = json else {
            throw .invalidArgument("the webhooks file must hold a JSON array of endpoints")
        }
        var endpoints: [WebhookEndpoint] = []
        for (index, entry) in entries.enumerated() {
            guard case .object(let fields) = entry, case .string(let url)? = fields["url"], case .string(let secret)? = fields["secret"] else {
                throw .invalidArgument("webhook \(index + 1) in the file needs \"url\" and \"secret\" strings")
            }
            func seconds(_ name: String, scale: Double) throws(PresenceError) -> Duration? {
                switch fields[name] {
                case nil: return nil
                // At most about 31 years: beyond, milliseconds would not fit an Int64 conversion.
                case .integer(let value)? where value >= 0 && Double(value) * scale <= 1e9:
                    return .milliseconds(Int64(Double(value) * scale * 1_000))
                case .double(let value)? where value >= 0 && value * scale <= 1e9: return .milliseconds(Int64(value * scale * 1_000))
                default: throw .invalidArgument("\(name) of webhook \(index + 1) must be a number of seconds from 0 to 1e9")
                }
            }
            var name: String?
            switch fields["name"] {
            case nil, .null?: name = nil
            case .string(let value)?: name = value
            default: throw .invalidArgument("name of webhook \(index + 1) must be a string")
            }
            endpoints.append(try WebhookEndpoint(
                url: url, secret: secret, name: name, flapWindow: try seconds("flapSuppressionSeconds", scale: 1) ?? flapWindow,
                giveUpAfter: try seconds("giveUpHours", scale: 3_600) ?? giveUpAfter))
        }
        return endpoints
    }
}
