import ArgumentParser
import Foundation
import PresenceClient
import PresenceCore

/// A room in a terminal: joins it and redraws its face pile and list whenever it changes. Or,
/// with `--users`, a friends list: those users' status across every room.
@main
struct PresenceWatch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "presence-watch",
        abstract: "Join a presence room and watch who is there, live; or watch users wherever they are.")

    @Option(help: "The server's WebSocket URL.")
    var url = "ws://127.0.0.1:8080/api/ws"

    @Option(help: "The room to join.")
    var room: String?

    @Option(help: "Comma-separated user ids to watch across every room, instead of joining a room.")
    var users: String?

    @Option(help: "A user token, for servers that require user authentication [PRESENCE_TOKEN].")
    var token: String?

    @Option(help: "Your user id in the room.")
    var user = "watcher-\(Int.random(in: 1000...9999))"

    @Option(help: "Your display name.")
    var name: String?

    @Option(help: "Heartbeat interval in seconds.")
    var interval = 10

    @Flag(help: "Print each list as a plain block instead of redrawing the screen.")
    var plain = false

    func validate() throws {
        guard (room == nil) != (users == nil) else { throw ValidationError("give either --room or --users") }
    }

    func run() async throws {
        var configuration = PresenceClient.Configuration()
        if let token = token ?? ProcessInfo.processInfo.environment["PRESENCE_TOKEN"] {
            configuration.token = { token }
        }
        let client = PresenceClient(url: url, configuration: configuration)
        let signals = SignalWatcher()
        if let users {
            let userIds = users.split(separator: ",").map { String($0.trimmingCharacters(in: .whitespaces)) }.filter { !$0.isEmpty }
            let statuses = try await client.watch(userIds: userIds)
            let watch = Task {
                for await list in statuses {
                    show(render(list, nowMillis: Self.nowMillis))
                }
            }
            await signals.waitForInterrupt()
            watch.cancel()
            await client.abandon()
            return
        }
        guard let room else { return }
        let presence = try await client.join(room: room, user: user, interval: .seconds(interval), name: name)
        let watch = Task {
            for await users in presence.users {
                show(render(users, counts: await presence.currentCounts, room: room, nowMillis: Self.nowMillis))
            }
        }
        // A big room's counts change without its shown list changing.
        let counts = Task {
            for await counts in presence.counts {
                show(render(await presence.current, counts: counts, room: room, nowMillis: Self.nowMillis))
            }
        }
        await signals.waitForInterrupt()
        watch.cancel()
        counts.cancel()
        await presence.leave()
    }

    static var nowMillis: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func show(_ text: String) {
        print(text, terminator: "")
        fflush(nil)
    }

    /// The watched users, one line each, in the order asked.
    func render(_ statuses: [UserStatus], nowMillis: Int64) -> String {
        var lines = ["watching \(statuses.count) users — \(statuses.count(where: \.online)) online", ""]
        for status in statuses {
            let state = status.online
                ? (status.away ? "away" : "online") + " in \(status.rooms) room\(status.rooms == 1 ? "" : "s")"
                : status.lastDisconnected > 0 ? FacePileModel.lastSeen(status.lastDisconnected, nowMillis: nowMillis) : "never seen"
            lines.append("\(FacePileModel.emoji(for: status.userId)) \(status.userId)  ·  \(state)")
        }
        let body = lines.joined(separator: "\n") + "\n"
        return plain ? body + "\n" : "\u{1B}[2J\u{1B}[H" + body
    }

    func render(_ users: [UserRecord], counts: RoomCounts?, room: String, nowMillis: Int64) -> String {
        let pile = FacePileModel(users: users, nowMillis: nowMillis, userCount: counts?.users)
        var lines: [String] = []
        // Offline faces dimmed; away ones carry a clock, as in the browser's face pile.
        let faces = pile.visible.map { face in
            let shown = face.away ? face.emoji + "🕒" : face.emoji
            return face.online || plain ? shown : "\u{1B}[2m\(shown)\u{1B}[0m"
        }.joined(separator: " ")
        let away = users.count { $0.online && $0.away }
        let online = counts?.online ?? users.count(where: \.online)
        let total = counts.map { ", \($0.users) in the room" } ?? ""
        lines.append("room \(room) — \(online) online\(away > 0 ? " (\(away) away among those listed)" : "")\(total), \(users.count) listed")
        lines.append(faces + (pile.overflowCount > 0 ? "  " + pile.overflowLabel : ""))
        lines.append("")
        for user in users {
            let face = FacePileModel(users: [user], nowMillis: nowMillis).visible[0]
            let data = face.dataRows.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
            let marker = user.userId == self.user ? " (you)" : ""
            lines.append("\(face.emoji) \(face.title)\(marker)  ·  \(face.status)\(data.isEmpty ? "" : "  ·  " + data)")
        }
        let body = lines.joined(separator: "\n") + "\n"
        return plain ? body + "\n" : "\u{1B}[2J\u{1B}[H" + body
    }
}

/// Waits for Ctrl-C or SIGTERM, so the watcher leaves the room before it exits.
final class SignalWatcher {
    private let sources: [any DispatchSourceSignal]
    private let stream: AsyncStream<Void>

    init() {
        let (stream, continuation) = AsyncStream<Void>.makeStream()
        self.stream = stream
        sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { continuation.yield() }
            source.resume()
            return source
        }
    }

    func waitForInterrupt() async {
        for await _ in stream { return }
    }
}

