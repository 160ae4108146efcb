import HTTPTypes
import Hummingbird
import DequeModule
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import NIOWebSocket
import PresenceCore
import PresenceStore
import Synchronization

/// Answers one socket's messages in order. A message that needs no waiting (most often a
/// heartbeat of a live session) is answered in the event loop's read, when nothing waits before
/// it. Others go to a task that runs only while messages wait, on the socket's event loop, and
/// ends when they are done: an idle socket holds no task.
final class SocketReader: Sendable {
    enum Message: Sendable {
        case request(SocketRequest)
        case undecodable(SocketRequest.DecodingError)
        case binary
    }

    private struct State {
        var waiting: Deque<Message> = []
        var running = false
        var stopped = false
        var identity: Identity?
        var whenIdle: (@Sendable () -> Void)?
    }

    let outbox: Outbox
    private let endpoint: WebSocketEndpoint
    private let executor: EventLoopTaskExecutor
    private let state: Mutex<State>

    init(endpoint: WebSocketEndpoint, outbox: Outbox, identity: Identity?, executor: EventLoopTaskExecutor) {
        self.endpoint = endpoint
        self.outbox = outbox
        self.executor = executor
        state = Mutex(State(identity: identity))
        outbox.authorize(until: identity?.expiresAt)
    }

    /// A text message, on the socket's event loop.
    func receive(text: [UInt8]) {
        let message: Message
        do {
            message = .request(try SocketRequest.decode(text))
        } catch {
            message = .undecodable(error)
        }
        if case .request(let request) = message, case .heartbeat(let heartbeat) = request.kind, let identity = identityWhenIdle(),
            let tokens = endpoint.operations.heartbeatAtOnce(heartbeat, as: identity)
        {
            outbox.send(ServerFrame.heartbeat(id: request.id, tokens: tokens))
            return
        }
        enqueue(message)
    }

    /// The socket's identity (the inner nil: none) while no message is waiting or being answered,
    /// so one answered at once cannot overtake them; nil otherwise.
    private func identityWhenIdle() -> Identity?? {
        state.withLock { state in
            guard !state.running, !state.stopped, state.waiting.isEmpty else { return nil }
            return .some(state.identity)
        }
    }

    func enqueue(_ message: Message) {
        let start = state.withLock { state -> Bool in
            guard !state.stopped else { return false }
            state.waiting.append(message)
            guard !state.running else { return false }
            state.running = true
            return true
        }
        if start { Task(executorPreference: executor) { await self.drain() } }
    }

    /// Takes no more messages and drops those still waiting.
    func stop() {
        state.withLock {
            $0.stopped = true
            $0.waiting.removeAll()
        }
    }

    /// Runs `body` once no message is being answered: at once, or when the running one is done,
    /// so a subscription it makes cannot outlive the socket's cleanup.
    func whenIdle(_ body: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            guard state.running else { return true }
            state.whenIdle = body
            return false
        }
        if now { body() }
    }

    private func drain() async {
        while true {
            enum Next {
                case message(Message, Identity?)
                case idle((@Sendable () -> Void)?)
            }
            // Going idle and taking what waits for it are one step: a drain started after this
            // one ended must not have its cleanup run by this one.
            let next = state.withLock { state -> Next in
                guard !state.stopped, let message = state.waiting.popFirst() else {
                    state.running = false
                    defer { state.whenIdle = nil }
                    return .idle(state.whenIdle)
                }
                return .message(message, state.identity)
            }
            switch next {
            case .idle(let whenIdle):
                whenIdle?()
                return
            case .message(.binary, _):
                outbox.send(ServerFrame.error(id: nil, .invalidArgument("messages must be JSON text frames")))
            case .message(.undecodable(let failure), _):
                endpoint.metrics.count(failure.error)
                outbox.send(ServerFrame.error(id: failure.id, failure.error))
            case .message(.request(let request), let identity):
                var updated = identity
                await handle(request, identity: &updated)
                if updated != identity { state.withLock { $0.identity = updated } }
            }
        }
    }

    /// A codec from a message to `PresenceOperations` and its reply into the outbox.
    private func handle(_ request: SocketRequest, identity: inout Identity?) async {
        let operations = endpoint.operations
        let requestId = request.id
        do throws(PresenceError) {
            switch request.kind {
            case .auth(let token):
                let caller = try await operations.authenticateUser(token: token)
                identity = caller.identity
                outbox.authorize(until: caller.identity?.expiresAt)
                outbox.send(ServerFrame.reply(type: "authenticated", id: requestId) { $0.field("userId", caller.identity?.userId) })
            case .heartbeat(let heartbeat):
                let caller = try await operations.authenticateSocket(identity: identity)
                let tokens = try await operations.heartbeat(heartbeat, by: caller)
                outbox.send(ServerFrame.heartbeat(id: requestId, tokens: tokens))
            case .subscribe(let list):
                let caller = try await operations.authenticateSocket(identity: identity)
                try await operations.authorizeSubscription(list, by: caller)
                endpoint.hub.submit(.subscribe(outbox, roomToken: list.roomToken, limit: list.limit, requestId: requestId))
            case .unsubscribe(let roomToken):
                endpoint.hub.submit(.unsubscribe(outbox, roomToken: roomToken, requestId: requestId))
            case .update(let update):
                let caller = try await operations.authenticateSocket(identity: identity)
                try await operations.update(update, by: caller)
                outbox.send(ServerFrame.reply(type: "updated", id: requestId))
            case .disconnect(let sessionToken):
                try await operations.disconnect(sessionToken: sessionToken)
                outbox.send(ServerFrame.reply(type: "disconnected", id: requestId))
            case .watchUsers(let watch):
                let caller = try await operations.authenticateSocket(identity: identity)
                try await operations.authorizeWatch(watch, by: caller)
                endpoint.watchers.submit(.watch(outbox, userIds: watch.userIds, requestId: requestId))
            case .unwatchUsers(let unwatch):
                endpoint.watchers.submit(.unwatch(outbox, userIds: unwatch.userIds, requestId: requestId))
            }
        } catch {
            endpoint.metrics.count(error)
            outbox.send(ServerFrame.error(id: requestId, error))
        }
    }
}
