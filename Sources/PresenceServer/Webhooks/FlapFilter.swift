import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Which events of a page go out, with flap suppression: a `leave` whose window has not passed
/// yet holds back itself and everything after it (order per endpoint is kept), unless the page
/// already shows the `join` that cancels it.
enum FlapFilter {
    struct Selection: Equatable {
        /// The events to deliver, in order.
        var events: [PresenceEvent]
        /// The last sequence this selection accounts for (delivered or suppressed); nil for none.
        var through: UInt64?
        /// When a held-back leave's window ends, if one was held back.
        var holdUntil: Int64?
    }

    /// Takes at most `batchSize` events to deliver from `page` (read with a look-ahead beyond the
    /// batch); `pageIsComplete` says that no event follows the page yet.
    static func select(
        _ page: [PresenceEvent], window: Int64, now: Int64, batchSize: Int, pageIsComplete: Bool
    ) -> Selection {
        var selected: [PresenceEvent] = []
        var suppressed = Set<UInt64>()
        var through: UInt64?
        for (index, event) in page.enumerated() {
            if suppressed.contains(event.sequence) {
                through = event.sequence
                continue
            }
            if window > 0, event.kind == .leave {
                let next = page[(index + 1)...].first {
                    $0.roomId.isSameID(as: event.roomId) && $0.userId.isSameID(as: event.userId) && ($0.kind == .join || $0.kind == .removed)
                }
                if let next, next.kind == .join, next.at - event.at <= window {
                    suppressed.insert(next.sequence)
                    through = event.sequence
                    continue
                }
                if next == nil {
                    let windowEnds = event.at + window
                    if now < windowEnds {
                        return Selection(events: selected, through: through, holdUntil: windowEnds)
                    }
                    // The join may lie past the page: read again from this leave. A leave that
                    // starts the page is decided on what the page shows, or delivery would stall.
                    if !pageIsComplete, page.last!.at <= windowEnds, index > 0 {
                        return Selection(events: selected, through: through, holdUntil: nil)
                    }
                }
            }
            guard selected.count < batchSize else { break }
            selected.append(event)
            through = event.sequence
        }
        return Selection(events: selected, through: through, holdUntil: nil)
    }
}
