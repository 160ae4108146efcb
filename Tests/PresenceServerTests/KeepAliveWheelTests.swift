import NIOCore
import NIOEmbedded
import Testing

@testable import PresenceServer

/// The keep-alive on its wheel, on an embedded event loop whose clock the tests move: pings
/// and cuts at the right steps, for many sockets sharing one wheel.
@Suite struct KeepAliveWheelTests {
    static let interval = TimeAmount.milliseconds(800)  // steps of 100 ms
    static let ping = ByteBuffer(bytes: [0x89, 0x00])

    /// A socket on `loop` with a keep-alive on the shared wheel. The socket's handler tells the
    /// keep-alive what it hears; here the test does.
    struct Socket {
        let channel: EmbeddedChannel
        let keepAlive: WebSocketKeepAlive

        init(on loop: EmbeddedEventLoop, wheels: KeepAliveWheels) throws {
            channel = EmbeddedChannel(loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
            keepAlive = WebSocketKeepAlive(metrics: PresenceMetrics(), wheel: wheels.wheel(on: loop))
            keepAlive.start(channel)
        }

        func hear(_ loop: EmbeddedEventLoop) {
            keepAlive.heard(at: loop.now)
        }
    }

    static func pings(_ channel: EmbeddedChannel) throws -> Int {
        var count = 0
        while let written = try channel.readOutbound(as: ByteBuffer.self) {
            #expect(written == ping)
            count += 1
        }
        return count
    }

    @Test func aSilentSocketIsPingedAfterAnIntervalAndCutAfterAnother() throws {
        let loop = EmbeddedEventLoop()
        let socket = try Socket(on: loop, wheels: KeepAliveWheels(interval: Self.interval))
        let channel = socket.channel
        loop.advanceTime(by: .milliseconds(790))
        #expect(try Self.pings(channel) == 0)
        // Due at 800 ms; the wheel turns on its grid, at most a step (100 ms) late.
        loop.advanceTime(by: .milliseconds(110))
        #expect(try Self.pings(channel) == 1)
        #expect(channel.isActive)
        loop.advanceTime(by: .milliseconds(690))
        #expect(channel.isActive)
        loop.advanceTime(by: .milliseconds(220))
        #expect(!channel.isActive)
        #expect(try Self.pings(channel) == 0)
    }

    @Test func aPongOrAnyMessageKeepsASocket() throws {
        let loop = EmbeddedEventLoop()
        let socket = try Socket(on: loop, wheels: KeepAliveWheels(interval: Self.interval))
        let channel = socket.channel
        loop.advanceTime(by: .milliseconds(900))
        #expect(try Self.pings(channel) == 1)
        socket.hear(loop)  // the pong
        loop.advanceTime(by: .milliseconds(700))
        #expect(channel.isActive)
        #expect(try Self.pings(channel) == 0)
        // Silent since the pong: pinged again an interval after it, not cut.
        loop.advanceTime(by: .milliseconds(200))
        #expect(try Self.pings(channel) == 1)
        #expect(channel.isActive)
    }

    /// A thousand sockets on one wheel: those that talk more often than the interval are never
    /// pinged, the silent ones each once and then cut; closed ones are forgotten.
    @Test func manySocketsShareOneWheel() throws {
        let loop = EmbeddedEventLoop()
        let wheels = KeepAliveWheels(interval: Self.interval)
        let talking = { (index: Int) in index % 2 == 0 }
        let closedAtOnce = { (index: Int) in index % 10 == 1 }
        var sockets: [Socket] = []
        var pings: [Int] = []
        func advance() throws {
            for index in sockets.indices where talking(index) { sockets[index].hear(loop) }
            loop.advanceTime(by: .milliseconds(100))
            for index in sockets.indices where !closedAtOnce(index) { pings[index] += try Self.pings(sockets[index].channel) }
        }
        // Opened over 2 s, as a crowd connects; some closed at once, before any timer of theirs.
        for index in 0..<1_000 {
            sockets.append(try Socket(on: loop, wheels: wheels))
            pings.append(0)
            // Closed, not finished: finishing an embedded channel runs its loop's timers early.
            if closedAtOnce(index) {
                sockets[index].channel.close(promise: nil)
                loop.run()
            }
            if index % 50 == 49 { try advance() }
        }
        for _ in 0..<40 { try advance() }  // 4 s more
        for index in sockets.indices {
            if talking(index) {
                #expect(pings[index] == 0 && sockets[index].channel.isActive, "talking socket \(index)")
            } else if !closedAtOnce(index) {
                #expect(pings[index] == 1 && !sockets[index].channel.isActive, "silent socket \(index): \(pings[index]) pings")
            }
        }
    }

    /// The wheel of a loop is one: the sockets of a server share it.
    @Test func oneWheelPerLoop() {
        let loop = EmbeddedEventLoop()
        let wheels = KeepAliveWheels(interval: Self.interval)
        #expect(wheels.wheel(on: loop) === wheels.wheel(on: loop))
        #expect(wheels.wheel(on: loop) !== wheels.wheel(on: EmbeddedEventLoop()))
    }
}
