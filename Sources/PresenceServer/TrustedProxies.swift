import HTTPTypes
import NIOCore
import PresenceCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The load balancers and reverse proxies whose `Forwarded` / `X-Forwarded-For` headers are
/// believed. Behind one, every client arrives from the proxy's address, so without this the
/// per-address limits would cap the whole deployment; from anyone else the headers are ignored,
/// or a client could pick any address it likes.
///
/// ```swift
/// let proxies = try TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
/// let client = proxies.clientAddress(peer: channel.remoteAddress, headers: request.headers)
/// ```
public struct TrustedProxies: Sendable, Hashable {
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

    public static let none = TrustedProxies(networks: [])

    init(networks: [Network]) { self.networks = networks }

    /// - Parameter entries: addresses (`10.1.2.3`, `::1`) and CIDR ranges (`10.0.0.0/8`, `fd00::/8`).
    public init(_ entries: [String]) throws(PresenceError) {
        var networks: [Network] = []
        for entry in entries {
            let parts = entry.split(separator: "/", maxSplits: 1).map(String.init)
            guard let first = parts.first, let bytes = Self.parseAddress(first) else {
                throw .invalidArgument("\(entry) is not an IP address or CIDR range")
            }
            var prefixLength = bytes.count * 8
            if parts.count == 2 {
                guard let length = Int(parts[1]), (0...bytes.count * 8).contains(length) else {
                    throw .invalidArgument("\(entry) has an invalid prefix length")
                }
                prefixLength = length
            }
            networks.append(Network(bytes: bytes, prefixLength: prefixLength))
        }
        self.networks = networks
    }

    public var isEmpty: Bool { networks.isEmpty }

    func trusts(_ address: String) -> Bool {
        guard let bytes = Self.parseAddress(address) else { return false }
        return networks.contains { $0.contains(bytes) }
    }

    /// The address the limits count: the peer's, unless the peer is a trusted proxy; then the
    /// nearest address in the forwarding chain that is not itself a trusted proxy.
    public func clientAddress(peer: SocketAddress?, headers: HTTPFields) -> String {
        let peerAddress = peer?.ipAddress ?? "unknown"
        guard !networks.isEmpty, trusts(peerAddress) else { return peerAddress }
        // Each proxy appends the address it received from, so read the chain from its right end.
        let chain = Self.forwardedChain(headers)
        for address in chain.reversed() where !trusts(address) {
            return address
        }
        return chain.first ?? peerAddress
    }

    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let forwarded = HTTPField.Name("Forwarded")!

    /// The client addresses of `Forwarded` (RFC 7239) or, without it, `X-Forwarded-For`, in
    /// order; entries that are not IP addresses (`unknown`, obfuscated names) are skipped.
    static func forwardedChain(_ headers: HTTPFields) -> [String] {
        let forwardedValues = headers[values: forwarded]
        if !forwardedValues.isEmpty {
            return forwardedValues.flatMap { $0.split(separator: ",") }.compactMap { element in
                for pair in element.split(separator: ";") {
                    let keyValue = pair.split(separator: "=", maxSplits: 1)
                    guard keyValue.count == 2,
                        keyValue[0].trimmingSpaces.lowercased() == "for"
                    else { continue }
                    return normalized(String(keyValue[1].trimmingSpaces))
                }
                return nil
            }
        }
        return headers[values: xForwardedFor].flatMap { $0.split(separator: ",") }.compactMap {
            normalized(String($0.trimmingSpaces))
        }
    }

    /// `"[2001:db8::1]:443"` → `2001:db8::1`, `1.2.3.4:80` → `1.2.3.4`; nil for anything that is not an address.
    static func normalized(_ text: String) -> String? {
        var value = text
        if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
        if value.hasPrefix("[") {
            guard let end = value.firstIndex(of: "]") else { return nil }
            value = String(value[value.index(after: value.startIndex)..<end])
        } else if value.filter({ $0 == ":" }).count == 1 {
            value = String(value.split(separator: ":")[0])
        }
        return parseAddress(value) == nil ? nil : value
    }

    static func parseAddress(_ text: String) -> [UInt8]? {
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
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var value = self
        while value.first == " " || value.first == "\t" { value.removeFirst() }
        while value.last == " " || value.last == "\t" { value.removeLast() }
        return value
    }
}
