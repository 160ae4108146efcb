import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PresenceStore
import ServiceLifecycle
import Synchronization

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
