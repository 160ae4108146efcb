#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// IP addresses in one spelling each, so that a limit counted per address cannot be dodged by
/// respelling one (`2001:DB8:0::1`, `::ffff:10.1.2.3`).
public enum IPAddress {
    /// An address's bytes, IPv4-mapped IPv6 as IPv4's four; nil for anything that is not an address.
    public static func bytes(_ text: String) -> [UInt8]? {
        guard let bytes = rawBytes(text) else { return nil }
        return unmapped(bytes) ?? bytes
    }

    /// The one spelling of an address: IPv4 dotted, IPv4-mapped IPv6 as the IPv4 address it maps,
    /// other IPv6 as RFC 5952 writes it (lowercase, zeros compressed); nil for anything else.
    public static func canonical(_ text: String) -> String? {
        bytes(text).map(format)
    }

    /// As `inet_pton` reads it, IPv4-mapped addresses as they are.
    public static func rawBytes(_ text: String) -> [UInt8]? {
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
    public static func unmapped(_ bytes: [UInt8]) -> [UInt8]? {
        guard bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF else { return nil }
        return Array(bytes[12..<16])
    }

    static func format(_ bytes: [UInt8]) -> String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        bytes.withUnsafeBytes { raw in
            _ = inet_ntop(bytes.count == 4 ? AF_INET : AF_INET6, raw.baseAddress, &text, socklen_t(text.count))
        }
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// The header a trusted proxy writes the client's address into.
public enum ForwardingHeader: String, Sendable, Hashable, CaseIterable {
    /// `X-Forwarded-For: client, proxy1, …` (nginx's `$proxy_add_x_forwarded_for`, most load balancers).
    case xForwardedFor = "x-forwarded-for"
    /// RFC 7239's `Forwarded: for=client, for=proxy1`.
    case forwarded = "forwarded"

    /// The entries of this header's values (every field line of it, in order), each the canonical
    /// address it names or nil when it names none (`unknown`, `_hidden`, a name, garbage).
    public func chain(_ values: some Sequence<String>) -> [String?] {
        let elements = values.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }
        switch self {
        case .xForwardedFor:
            return elements.map { Self.address(in: $0.trimmingSpaces) }
        case .forwarded:
            return elements.map { element in
                for pair in element.split(separator: ";") {
                    let keyValue = pair.split(separator: "=", maxSplits: 1)
                    guard keyValue.count == 2, keyValue[0].trimmingSpaces.lowercased() == "for" else { continue }
                    return Self.address(in: keyValue[1].trimmingSpaces)
                }
                return nil
            }
        }
    }

    /// `"[2001:db8::1]:443"` → `2001:db8::1`, `1.2.3.4:80` → `1.2.3.4`, canonical; nil for anything
    /// that is not an address.
    static func address(in text: Substring) -> String? {
        var value = text
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
        return IPAddress.canonical(String(value))
    }
}

extension Character {
    fileprivate var isDecimalDigit: Bool { isASCII && isNumber }
}

extension StringProtocol {
    /// Without the spaces and tabs HTTP allows around a header's list elements.
    public var trimmingSpaces: Substring {
        var value = Substring(self)
        while value.first == " " || value.first == "\t" { value.removeFirst() }
        while value.last == " " || value.last == "\t" { value.removeLast() }
        return value
    }
}
