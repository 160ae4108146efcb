import ArgumentParser
import Foundation
import PresenceClient
import PresenceCore

/// A room in a terminal: joins it and redraws its face pile and list whenever it changes.
@main
struct PresenceWatch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "presence-watch",
        abstract: "Join a presence room and watch who is there, live.")

    @Option(help: "The server's WebSocket URL.")
    var url = "ws://127.0.0.1:8080/api/ws"

    @Option(help: "The room to join.")
    var room: String

    @Option(help: "Your user id in the room.")
    var user = "watcher-\(Int.random(in: 1000...9999))"

    @Option(help: "Your display name.")
    var name: String?

    @Option(help: "Heartbeat interval in seconds.")
    var interval = 10

    @Flag(help: "Print each list as a plain block instead of redrawing the screen.")
    var plain = false

    func run() async throws {
        let client = PresenceClient(url: url)
        let presence = try await client.join(room: room, user: user, interval: .seconds(interval), name: name)
        let signals = SignalWatcher()
        let watch = Task {
            for await users in presence.users {
                print(render(users, nowMillis: Int64(Date().timeIntervalSince1970 * 1000)), terminator: "")
                fflush(nil)
            }
        }
        await signals.waitForInterrupt()
        watch.cancel()
        await presence.leave()
    }

    func render(_ users: [UserRecord], nowMillis: Int64) -> String {
        let pile = FacePileModel(users: users, nowMillis: nowMillis)
        var lines: [String] = []
        // Offline faces dimmed; away ones carry a clock, as in the browser's face pile.
        let faces = pile.visible.map { face in
            let shown = face.away ? face.emoji + "🕒" : face.emoji
            return face.online || plain ? shown : "\u{1B}[2m\(shown)\u{1B}[0m"
        }.joined(separator: " ")
        let away = users.count { $0.online && $0.away }
        lines.append("room \(room) — \(users.filter(\.online).count) online\(away > 0 ? " (\(away) away)" : ""), \(users.count) listed")
        lines.append(faces + (pile.overflowCount > 0 ? "  +\(pile.overflowCount)" : ""))
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
