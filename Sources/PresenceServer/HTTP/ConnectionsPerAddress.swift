import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import PresenceCore
import Synchronization

/// Open TCP connections per peer address, whatever they carry (requests, WebSockets, nothing):
/// each holds a file descriptor, and one address must not hold them all. Connections from a
/// trusted proxy carry many clients and are not capped here; the per-client limits behind the
/// proxy count what it forwards.
final class ConnectionsPerAddress: Sendable {
    let maximum: Int
    private let trustedProxies: TrustedProxies
    private let counts = Mutex<[String: Int]>([:])

    init(maximum: Int, trustedProxies: TrustedProxies) {
        self.maximum = maximum
        self.trustedProxies = trustedProxies
    }

    /// Counts `channel` until it closes; false (and not counted) when its address is at the maximum.
    func open(_ channel: any Channel) -> Bool {
        guard let address = channel.remoteAddress.flatMap(TrustedProxies.canonicalAddress(of:)) else { return true }
        if trustedProxies.trusts(address) { return true }
        let admitted = counts.withLock { counts in
            let count = counts[address, default: 0]
            guard count < maximum else { return false }
            counts[address] = count + 1
            return true
        }
        guard admitted else { return false }
        channel.closeFuture.whenComplete { [self] _ in
            counts.withLock { counts in
                counts[address, default: 1] -= 1
                if counts[address] == 0 { counts.removeValue(forKey: address) }
            }
        }
        return true
    }
}
