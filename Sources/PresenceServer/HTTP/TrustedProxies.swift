import HTTPTypes
import NIOCore
import PresenceCore

/// The load balancers and reverse proxies whose forwarding header is believed, and which header
/// that is. Behind one, every client arrives from the proxy's address, so without this the
/// per-address limits would cap the whole deployment; from anyone else the headers are ignored,
/// or a client could pick any address it likes.
///
/// Only the header the proxies are configured to set is read (`header`; `X-Forwarded-For` by
/// default, which the shipped nginx config sets): a proxy passes the other through as the client
/// sent it, so reading that one let any client name its own address.
///
/// ```swift
/// let proxies = try TrustedProxies(["10.0.0.0/8", "127.0.0.1"], header: .xForwardedFor)
/// let client = proxies.clientAddress(peer: channel.remoteAddress, headers: request.headers)
/// ```
public struct TrustedProxies: Sendable, Hashable {
    /// The header a trusted proxy writes the client's address into.
    public typealias Header = ForwardingHeader

    struct Network: Sendable, Hashable {
        let bytes: [UInt8]
        let prefixLength: Int

        func contains(_ address: [UInt8]) -> Bool {
            guard address.count == bytes.count else { return false }
            var remaining = prefixLength
            for index in bytes.indices where remaining > 0 {
                let bits = min(8, remaining)
                let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
                if address[index] & mask != bytes[index] & mask { return false }
                remaining -= bits
            }
            return true
        }
    }

    let networks: [Network]
    public let header: Header
    /// `header` as a field name, made once: every request behind a proxy reads it.
    private let headerName: HTTPField.Name

    public static let none = TrustedProxies(networks: [], header: .xForwardedFor)

    init(networks: [Network], header: Header) {
        self.networks = networks
        self.header = header
        headerName = HTTPField.Name(header.rawValue)!
    }

    /// - Parameter entries: addresses (`10.1.2.3`, `::1`) and CIDR ranges (`10.0.0.0/8`, `fd00::/8`).
    /// - Parameter header: the header these proxies set.
    public init(_ entries: [String], header: Header = .xForwardedFor) throws(PresenceError) {
        var networks: [Network] = []
        for entry in entries {
            let parts = entry.split(separator: "/", maxSplits: 1).map(String.init)
            guard let first = parts.first, var bytes = IPAddress.rawBytes(first) else {
                throw .invalidArgument("\(entry) is not an IP address or CIDR range")
            }
            var prefixLength = bytes.count * 8
            if parts.count == 2 {
                guard let length = Int(parts[1]), (0...bytes.count * 8).contains(length) else {
                    throw .invalidArgument("\(entry) has an invalid prefix length")
                }
                prefixLength = length
            }
            // `::ffff:10.0.0.0/104` is the IPv4 range it maps, as peers' mapped addresses are.
            if let v4 = IPAddress.unmapped(bytes), prefixLength >= 96 {
                bytes = v4
                prefixLength -= 96
            }
            networks.append(Network(bytes: bytes, prefixLength: prefixLength))
        }
        self.init(networks: networks, header: header)
    }

    public var isEmpty: Bool { networks.isEmpty }

    func trusts(_ address: String) -> Bool {
        guard let bytes = IPAddress.bytes(address) else { return false }
        return networks.contains { $0.contains(bytes) }
    }

    /// The address the limits count, canonical (so each address has one bucket however it is
    /// spelled): the peer's, unless the peer is a trusted proxy; then the nearest entry of the
    /// forwarding chain that is not itself a trusted proxy. An entry that is not an address
    /// (`unknown`, `_hidden`, garbage) ends the walk: the trusted hop that reported it is counted,
    /// since whatever lies beyond it cannot be told apart, and must not be skipped to an
    /// address further left that the client wrote itself.
    public func clientAddress(peer: SocketAddress?, headers: HTTPFields) -> String {
        let peerAddress = peer.flatMap(Self.canonicalAddress(of:)) ?? "unknown"
        guard !networks.isEmpty, trusts(peerAddress) else { return peerAddress }
        var nearest = peerAddress
        // Each proxy appends the address it received from, so read the chain from its right end.
        for entry in header.chain(headers[values: headerName]).reversed() {
            guard let address = entry else { return nearest }
            guard trusts(address) else { return address }
            nearest = address
        }
        return nearest
    }

    /// A peer's address, canonical: a dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`.
    public static func canonicalAddress(of peer: SocketAddress) -> String? {
        peer.ipAddress.flatMap(IPAddress.canonical)
    }
}
