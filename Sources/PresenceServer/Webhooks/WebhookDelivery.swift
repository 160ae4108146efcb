import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PresenceStore
import ServiceLifecycle
import Synchronization

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
