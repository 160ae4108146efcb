import NIOCore
import Synchronization

/// The keep-alive timers of one event loop's sockets on a hashed wheel: slots of one `step`
/// each, and one NIO timer for the loop, set for the next slot with anyone in it. A timer per
/// socket costs a heap entry each (7,500 a loop at 15,000 sockets) and two heap walks each time
/// one fires; a place on the wheel costs an append. Timers fire on the grid of steps, late by
/// at most one step: sockets heard within the same step share the loop's wake-up.
///
/// Used on its event loop only.
final class KeepAliveWheel {
    private struct Entry {
        let handler: WebSocketKeepAlive
        let step: Int64
    }

    /// How long a peer may stay silent before it is pinged, and after the ping before it is cut.
    let interval: TimeAmount
    /// Nanoseconds per step.
    let step: Int64
    private let eventLoop: any EventLoop
    private var slots: [[Entry]]
    /// The first step not yet handled.
    private var cursor: Int64
    private var timer: Scheduled<Void>?
    private var timerStep: Int64?

    /// Steps of an eighth of `interval`, at most a second.
    init(eventLoop: any EventLoop, interval: TimeAmount) {
        self.eventLoop = eventLoop
        self.interval = interval
        step = max(1, min(interval.nanoseconds / 8, 1_000_000_000))
        // A deadline is at most `interval` (8 steps) ahead, plus the step it rounds up to: one
        // lap of the wheel holds every deadline, so a slot's entries are nearly always due.
        slots = Array(repeating: [], count: Int(max(1, interval.nanoseconds / step)) + 2)
        cursor = Int64(eventLoop.now.uptimeNanoseconds) / step
    }

    /// `handler.due` runs on the first step after `deadline`; this replaces the handler's earlier place.
    func schedule(_ handler: WebSocketKeepAlive, at deadline: NIODeadline) {
        let due = max(Int64(deadline.uptimeNanoseconds) / step + 1, cursor)
        handler.awaitedStep = due
        slots[slot(of: due)].append(Entry(handler: handler, step: due))
        if timerStep.map({ due < $0 }) ?? true { arm(at: due) }
    }

    private func slot(of step: Int64) -> Int {
        Int(step % Int64(slots.count))
    }

    private func arm(at step: Int64) {
        timer?.cancel()
        timerStep = step
        timer = eventLoop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(UInt64(step * self.step))) { [self] in turn() }
    }

    /// Handles every step up to now: each handler whose step has come, and whose place it is.
    private func turn() {
        timer = nil
        timerStep = nil
        let now = eventLoop.now
        let last = Int64(now.uptimeNanoseconds) / step
        // After a long sleep a lap covers everything: each slot holds all steps that map to it.
        var due: [WebSocketKeepAlive] = []
        for current in stride(from: max(cursor, last - Int64(slots.count) + 1), through: last, by: 1) {
            let index = slot(of: current)
            guard !slots[index].isEmpty else { continue }
            var later: [Entry] = []
            for entry in slots[index] {
                if entry.step > last {
                    later.append(entry)
                } else if entry.handler.awaitedStep == entry.step {
                    entry.handler.awaitedStep = nil
                    due.append(entry.handler)
                }
            }
            slots[index] = later
        }
        cursor = max(cursor, last + 1)
        // Handlers reschedule themselves, always after `last`.
        for handler in due { handler.due(now: now) }
        if timer == nil, let next = nextOccupiedStep() { arm(at: next) }
    }

    /// The first step from the cursor whose slot holds anyone (perhaps for a later lap).
    private func nextOccupiedStep() -> Int64? {
        for offset in 0..<Int64(slots.count) where !slots[slot(of: cursor + offset)].isEmpty {
            return cursor + offset
        }
        return nil
    }
}

/// One keep-alive wheel per event loop, for one server.
final class KeepAliveWheels: Sendable {
    private let interval: TimeAmount
    private let wheels = Mutex<[ObjectIdentifier: NIOLoopBound<KeepAliveWheel>]>([:])

    init(interval: TimeAmount) {
        self.interval = interval
    }

    /// The wheel of `eventLoop`; call on that loop.
    func wheel(on eventLoop: any EventLoop) -> KeepAliveWheel {
        let bound = wheels.withLock { wheels in
            if let wheel = wheels[ObjectIdentifier(eventLoop)] { return wheel }
            let wheel = NIOLoopBound(KeepAliveWheel(eventLoop: eventLoop, interval: interval), eventLoop: eventLoop)
            wheels[ObjectIdentifier(eventLoop)] = wheel
            return wheel
        }
        return bound.value
    }
}
