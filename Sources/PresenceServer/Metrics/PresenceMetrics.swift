import CoreMetrics
import Prometheus
import PresenceStore

/// The server's metrics, kept in its own Prometheus registry (not the process-wide
/// bootstrap) so several servers in one process, as in tests, never mix their figures.
public final class PresenceMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let heartbeats: CoreMetrics.Counter
    let expiries: CoreMetrics.Counter
    let messagesSent: CoreMetrics.Counter
    let bytesSent: CoreMetrics.Counter
    let slowSubscribersDropped: CoreMetrics.Counter
    let floodingSocketsClosed: CoreMetrics.Counter
    let rateLimited: CoreMetrics.Counter
    let connectionsRefused: CoreMetrics.Counter
    let authenticationFailures: CoreMetrics.Counter
    let slowClientsCut: CoreMetrics.Counter
    /// Requests NIO's parser refused, answered with 400 and a closed connection.
    let malformedRequests: CoreMetrics.Counter
    /// WebSockets closed because the peer answered neither messages nor a ping.
    let silentSocketsCut: CoreMetrics.Counter
    let subscribers: CoreMetrics.Gauge
    let sockets: CoreMetrics.Meter
    /// From a room change reaching the hub to its diffs being in every subscriber's outbox.
    let fanoutLag: CoreMetrics.Timer
    /// Rooms being read for their subscribers or waiting for a read slot.
    let fanoutRoomsWaiting: CoreMetrics.Gauge
    private let sessions: CoreMetrics.Gauge
    private let onlineUsers: CoreMetrics.Gauge
    private let rooms: CoreMetrics.Gauge
    private let events: CoreMetrics.Gauge

    public init() {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        self.registry = registry
        heartbeats = Counter(label: "presence_heartbeats_total", factory: factory)
        expiries = Counter(label: "presence_expired_sessions_total", factory: factory)
        messagesSent = Counter(label: "presence_ws_messages_sent_total", factory: factory)
        bytesSent = Counter(label: "presence_ws_bytes_sent_total", factory: factory)
        slowSubscribersDropped = Counter(label: "presence_slow_subscribers_dropped_total", factory: factory)
        floodingSocketsClosed = Counter(label: "presence_flooding_sockets_closed_total", factory: factory)
        rateLimited = Counter(label: "presence_rate_limited_total", factory: factory)
        connectionsRefused = Counter(label: "presence_connections_refused_total", factory: factory)
        authenticationFailures = Counter(label: "presence_authentication_failures_total", factory: factory)
        slowClientsCut = Counter(label: "presence_slow_requests_cut_total", factory: factory)
        malformedRequests = Counter(label: "presence_malformed_requests_total", factory: factory)
        silentSocketsCut = Counter(label: "presence_ws_silent_closed_total", factory: factory)
        subscribers = Gauge(label: "presence_subscriptions", factory: factory)
        sockets = Meter(label: "presence_ws_connections", factory: factory)
        fanoutLag = Timer(label: "presence_fanout_lag_seconds", factory: factory)
        fanoutRoomsWaiting = Gauge(label: "presence_fanout_rooms_waiting", factory: factory)
        sessions = Gauge(label: "presence_sessions", factory: factory)
        onlineUsers = Gauge(label: "presence_online_users", factory: factory)
        rooms = Gauge(label: "presence_rooms", factory: factory)
        events = Gauge(label: "presence_events_written", factory: factory)
    }

    /// Counts the errors that are metrics of their own.
    func count(_ error: PresenceError) {
        switch error.status {
        case 429: rateLimited.increment()
        case 401: authenticationFailures.increment()
        default: break
        }
    }

    /// The Prometheus text exposition, with the store's counts read at scrape time.
    /// `statistics` is nil when the store cannot be read (a shared store while it is fenced): the
    /// scrape still answers, with the store's own figures saying why.
    func render(statistics: PresenceStatistics?, store storeGauges: [StoreGauge] = []) -> String {
        if let statistics {
            sessions.record(statistics.sessions)
            onlineUsers.record(statistics.onlineUsers)
            rooms.record(statistics.rooms)
            events.record(Double(statistics.lastEventSequence))
        }
        var text = registry.emitToString()
        // The store's figures are read at scrape time, like the counts above; they are not kept here.
        // A figure may carry labels (`name{endpoint="…"}`): HELP and TYPE name its family, once,
        // as the text format requires (a label there made Prometheus refuse the whole scrape).
        var described = Set<Substring>()
        for gauge in storeGauges {
            let family = gauge.name.prefix { $0 != "{" }
            if described.insert(family).inserted {
                let type = family.hasSuffix("_total") ? "counter" : "gauge"
                text += "# HELP \(family) \(gauge.help)\n# TYPE \(family) \(type)\n"
            }
            text += "\(gauge.name) \(gauge.value)\n"
        }
        return text
    }
}
