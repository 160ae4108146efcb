import HTTPTypes
import NIOCore
import PresenceCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
    public enum Header: String, Sendable, Hashable, CaseIterable {
        /// `X-Forwarded-For: client, proxy1, …` (nginx's `$proxy_add_x_forwarded_for`, most load balancers).
        case xForwardedFor = "x-forwarded-for"
        /// RFC 7239's `Forwarded: for=client, for=proxy1`.
        case forwarded = "forwarded"

        var name: HTTPField.Name { HTTPField.Name(rawValue)! }
    }

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

    public static let none = TrustedProxies(networks: [], header: .xForwardedFor)

    init(networks: [Network], header: Header) {
        self.networks = networks
        self.header = header
    }

    /// - Parameter entries: addresses (`10.1.2.3`, `::1`) and CIDR ranges (`10.0.0.0/8`, `fd00::/8`).
    /// - Parameter header: the header these proxies set.
    public init(_ entries: [String], header: Header = .xForwardedFor) throws(PresenceError) {
        var networks: [Network] = []
        for entry in entries {
            let parts = entry.split(separator: "/", maxSplits: 1).map(String.init)
            guard let first = parts.first, var bytes = Self.rawAddressBytes(first) else {
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
            if let v4 = Self.unmapped(bytes), prefixLength >= 96 {
                bytes = v4
                prefixLength -= 96
            }
            networks.append(Network(bytes: bytes, prefixLength: prefixLength))
        }
        self.networks = networks
        self.header = header
    }

    public var isEmpty: Bool { networks.isEmpty }

    func trusts(_ address: String) -> Bool {
        guard let bytes = Self.parseAddress(address) else { return false }
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
        for entry in forwardedChain(headers).reversed() {
            guard let address = entry else { return nearest }
            guard trusts(address) else { return address }
            nearest = address
        }
        return nearest
    }

    /// The entries of the configured header, in order, each canonical or nil when it is not an address.
    func forwardedChain(_ headers: HTTPFields) -> [String?] {
        let elements = headers[values: header.name].flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }
        switch header {
        case .xForwardedFor:
            return elements.map { Self.normalized(String($0.trimmingSpaces)) }
        case .forwarded:
            return elements.map { element in
                for pair in element.split(separator: ";") {
                    let keyValue = pair.split(separator: "=", maxSplits: 1)
                    guard keyValue.count == 2, keyValue[0].trimmingSpaces.lowercased() == "for" else { continue }
                    return Self.normalized(String(keyValue[1].trimmingSpaces))
                }
                return nil
            }
        }
    }

    /// `"[2001:db8::1]:443"` → `2001:db8::1`, `1.2.3.4:80` → `1.2.3.4`, canonical; nil for anything
    /// that is not an address (`unknown`, `_hidden`, a name).
    static func normalized(_ text: String) -> String? {
        var value = Substring(text)
        if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = value.dropFirst().dropLast() }
        if value.hasPrefix("[") {
            guard let end = value.firstIndex(of: "]") else { return nil }
            let rest = value[value.index(after: end)...]
            guard rest.isEmpty || (rest.first == ":" && rest.dropFirst().allSatisfy(\.isDecimalDigit)) else { return nil }
            value = value[value.index(after: value.startIndex)..<end]
        } else if value.filter({ $0 == ":" }).count == 1 {
            let parts = value.split(separator: ":", omittingEmptySubsequences: false)
            guard parts[1].allSatisfy(\.isDecimalDigit) else { return nil }
            value = parts[0]
        }
        return canonical(String(value))
    }

    /// The one spelling of an address: IPv4 dotted, IPv4-mapped IPv6 as the IPv4 address it maps,
    /// other IPv6 as RFC 5952 writes it (lowercase, zeros compressed).
    static func canonical(_ text: String) -> String? {
        guard let bytes = parseAddress(text) else { return nil }
        return format(bytes)
    }

    /// A peer's address, canonical: a dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`.
    public static func canonicalAddress(of peer: SocketAddress) -> String? {
        peer.ipAddress.flatMap(canonical)
    }

    /// An address's bytes, IPv4-mapped IPv6 as IPv4's four.
    static func parseAddress(_ text: String) -> [UInt8]? {
        guard let bytes = rawAddressBytes(text) else { return nil }
        return unmapped(bytes) ?? bytes
    }

    private static func rawAddressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    /// The IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) maps; nil for any other.
    private static func unmapped(_ bytes: [UInt8]) -> [UInt8]? {
        guard bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF else { return nil }
        return Array(bytes[12..<16])
    }

    private static func format(_ bytes: [UInt8]) -> String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        bytes.withUnsafeBytes { raw in
            _ = inet_ntop(bytes.count == 4 ? AF_INET : AF_INET6, raw.baseAddress, &text, socklen_t(text.count))
        }
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

extension Character {
    fileprivate var isDecimalDigit: Bool { isASCII && isNumber }
}

extension StringProtocol {
    /// Without the spaces and tabs HTTP allows around a header's list elements.
    var trimmingSpaces: Substring {
        var value = Substring(self)
        while value.first == " " || value.first == "\t" { value.removeFirst() }
        while value.last == " " || value.last == "\t" { value.removeLast() }
        return value
    }
}
