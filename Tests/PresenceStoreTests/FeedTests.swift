import PresenceStore
import Synchronization
import Testing

/// A feed's listeners get every element, in order, on the publishing thread, until they stop.
@Suite struct FeedTests {
    @Test func listenersGetEveryElementInOrderUntilCancelled() {
        let feed = Feed<Int>()
        let heard = Mutex<[Int]>([])
        let listening = feed.listen { element in heard.withLock { $0.append(element) } }
        feed.publish([1, 2])
        feed.publish([])
        feed.publish([3])
        // Synchronous: nothing to wait for.
        #expect(heard.withLock { $0 } == [1, 2, 3])
        listening.cancel()
        feed.publish([4])
        #expect(heard.withLock { $0 } == [1, 2, 3])
    }

    @Test func aListeningLetGoOfStopsListening() {
        let feed = Feed<Int>()
        let heard = Atomic<Int>(0)
        do {
            let listening = feed.listen { _ in heard.add(1, ordering: .relaxed) }
            feed.publish([1])
            withExtendedLifetime(listening) {}
        }
        feed.publish([2, 3])
        #expect(heard.load(ordering: .relaxed) == 1)
    }

    /// Streams and listeners of one feed see the same elements.
    @Test func streamsAndListenersSeeTheSameElements() async {
        let feed = Feed<Int>()
        let stream = feed.stream()
        let heard = Mutex<[Int]>([])
        let listening = feed.listen { element in heard.withLock { $0.append(element) } }
        feed.publish([5, 6, 7])
        feed.finish()
        var read: [Int] = []
        for await element in stream { read.append(element) }
        #expect(read == [5, 6, 7])
        #expect(heard.withLock { $0 } == read)
        listening.cancel()
    }
}
