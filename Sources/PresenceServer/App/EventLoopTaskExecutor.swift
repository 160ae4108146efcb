import NIOCore

/// Runs a task's jobs on a NIO event loop. A connection's task that prefers its channel's loop
/// reads, answers and writes there: a message that arrives wakes one thread, not the loop and
/// then a thread of Swift's pool and then the loop again for the reply. Those hops (a futex
/// wake-up and a task switch each) cost more than a heartbeat's own work.
final class EventLoopTaskExecutor: TaskExecutor {
    private let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { [self] in
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
