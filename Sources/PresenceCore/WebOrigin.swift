/// A web origin as RFC 6454 compares them: scheme and host case-insensitive, a scheme's default
/// port the same as no port. `null` (sandboxed frames, `file:` pages) and anything else that is not
/// `scheme://host[:port]` is opaque: no `WebOrigin`, equal to no origin, not even to another `null`.
public struct WebOrigin: Hashable, Sendable {
    public let scheme: String
    public let host: String
    public let port: Int

    public init?(_ text: some StringProtocol) {
        guard let separator = text.range(of: "://") else { return nil }
        let scheme = text[..<separator.lowerBound].lowercased()
        var authority = Substring(text[separator.upperBound...])
        guard !scheme.isEmpty, scheme.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) }),
            !authority.isEmpty, !authority.contains(where: { "/?#@ ".contains($0) || !$0.isASCII || $0.isWhitespace })
        else { return nil }
        var port: Int?
        // The port follows the last colon, unless that colon is inside an IPv6 literal.
        if let colon = authority.lastIndex(of: ":"), !authority[colon...].contains("]") {
            let digits = authority[authority.index(after: colon)...]
            guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(digits),
                number <= 65_535
            else { return nil }
            port = number
            authority = authority[..<colon]
        }
        guard Self.isHost(authority), let resolved = port ?? Self.defaultPorts[scheme] else { return nil }
        self.scheme = scheme
        self.host = authority.lowercased()
        self.port = resolved
    }

    /// The origin as RFC 6454 serializes it: the default port left out.
    public var serialized: String {
        Self.defaultPorts[scheme] == port ? "\(scheme)://\(host)" : "\(scheme)://\(host):\(port)"
    }

    static let defaultPorts = ["http": 80, "https": 443, "ws": 80, "wss": 443]

    /// An IPv6 literal in brackets, or a name or IPv4 address of RFC 3986's unreserved characters
    /// and percent escapes: anything else (a second colon, say) would not read back as the same origin.
    static func isHost(_ host: Substring) -> Bool {
        if host.first == "[" {
            return host.count > 2 && host.last == "]"
                && host.dropFirst().dropLast().allSatisfy { $0.isASCII && ($0.isHexDigit || $0 == ":" || $0 == ".") }
        }
        return !host.isEmpty && host.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-._~%".contains($0)) }
    }
}

extension StringProtocol {
    /// The range of the first occurrence of `needle`, without Foundation.
    fileprivate func range(of needle: String) -> Range<Index>? {
        var start = startIndex
        while start < endIndex {
            if self[start...].hasPrefix(needle) { return start..<index(start, offsetBy: needle.count) }
            start = index(after: start)
        }
        return nil
    }
}
