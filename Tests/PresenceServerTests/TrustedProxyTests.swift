import HTTPTypes
import NIOCore
import PresenceServer
import PresenceStore
import Testing

@Suite struct TrustedProxyTests {
    let peer = try! SocketAddress(ipAddress: "10.0.0.5", port: 40_000)
    let stranger = try! SocketAddress(ipAddress: "203.0.113.9", port: 40_000)

    func headers(_ fields: [(String, String)]) -> HTTPFields {
        var headers = HTTPFields()
        for (name, value) in fields { headers.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return headers
    }

    @Test func aTrustedProxyNamesTheClientAndNobodyElseCan() throws {
        let proxies = try TrustedProxies(["10.0.0.0/8", "fd00::/8"])
        let forwarded = headers([("X-Forwarded-For", "198.51.100.7")])
        #expect(proxies.clientAddress(peer: peer, headers: forwarded) == "198.51.100.7")
        // From an address that is not a proxy the header is the client's own claim: ignored.
        #expect(proxies.clientAddress(peer: stranger, headers: forwarded) == "203.0.113.9")
        #expect(TrustedProxies.none.clientAddress(peer: peer, headers: forwarded) == "10.0.0.5")
        // Without a header the proxy's own address counts.
        #expect(proxies.clientAddress(peer: peer, headers: HTTPFields()) == "10.0.0.5")
    }

    @Test func theChainIsReadFromTheRightPastEveryTrustedHop() throws {
        let proxies = try TrustedProxies(["10.0.0.0/8"])
        // A client may send its own X-Forwarded-For: only what our proxies appended is believed.
        let spoofed = headers([("X-Forwarded-For", "1.2.3.4, 198.51.100.7, 10.1.1.1")])
        #expect(proxies.clientAddress(peer: peer, headers: spoofed) == "198.51.100.7")
        let twoHeaders = headers([("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "198.51.100.8")])
        #expect(proxies.clientAddress(peer: peer, headers: twoHeaders) == "198.51.100.8")
    }

    /// Only the configured header is read: a proxy passes the other through as the client wrote
    /// it (nginx appends to X-Forwarded-For and leaves a client's own Forwarded alone).
    @Test func onlyTheConfiguredHeaderIsRead() throws {
        let both = headers([
            ("Forwarded", #"for="[2001:db8::17]:4711";proto=https, for=10.0.0.9"#),
            ("X-Forwarded-For", "198.51.100.7"),
        ])
        let xForwardedFor = try TrustedProxies(["10.0.0.5"])
        #expect(xForwardedFor.header == .xForwardedFor)
        #expect(xForwardedFor.clientAddress(peer: peer, headers: both) == "198.51.100.7")
        let spoofedForwarded = headers([("Forwarded", "for=10.0.3.1")])
        #expect(xForwardedFor.clientAddress(peer: peer, headers: spoofedForwarded) == "10.0.0.5")

        let forwarded = try TrustedProxies(["10.0.0.5"], header: .forwarded)
        #expect(forwarded.clientAddress(peer: peer, headers: both) == "10.0.0.9")
        let ipv6 = headers([("Forwarded", #"for="[2001:db8::17]:4711""#)])
        #expect(forwarded.clientAddress(peer: peer, headers: ipv6) == "2001:db8::17")
        let withPort = headers([("Forwarded", "for=198.51.100.7:8080;by=10.0.0.5")])
        #expect(forwarded.clientAddress(peer: peer, headers: withPort) == "198.51.100.7")
        #expect(forwarded.clientAddress(peer: peer, headers: headers([("X-Forwarded-For", "198.51.100.7")])) == "10.0.0.5")
    }

    /// An entry that is not an address (RFC 7239's `unknown` and obfuscated `_names`, garbage)
    /// ends the walk at the trusted hop that reported it: the addresses further left were written
    /// by whoever the proxy could not name, the client itself perhaps.
    @Test func theWalkStopsAtTheFirstEntryThatIsNotAnAddress() throws {
        let forwarded = try TrustedProxies(["10.0.0.0/8"], header: .forwarded)
        for value in ["for=198.51.100.1, for=unknown", "for=198.51.100.1, for=_hidden", "for=198.51.100.1, for=\"_abc:_def\"", "for=198.51.100.1, for=evil.example"] {
            #expect(forwarded.clientAddress(peer: peer, headers: headers([("Forwarded", value)])) == "10.0.0.5", "\(value)")
        }
        // Behind a second trusted hop, that hop is the one counted.
        let twoHops = headers([("Forwarded", "for=198.51.100.1, for=unknown, for=10.2.2.2")])
        #expect(forwarded.clientAddress(peer: peer, headers: twoHops) == "10.2.2.2")
        let xForwardedFor = try TrustedProxies(["10.0.0.0/8"])
        for value in ["198.51.100.1, unknown", "198.51.100.1, garbage", "198.51.100.1, "] {
            #expect(xForwardedFor.clientAddress(peer: peer, headers: headers([("X-Forwarded-For", value)])) == "10.0.0.5", "\(value)")
        }
    }

    /// One address, one bucket, however it is spelled; a mapped peer matches its IPv4 proxy entry.
    @Test func addressesAreCanonicalBeforeTheyAreCountedOrMatched() throws {
        let proxies = try TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
        let spellings = [
            "2001:db8::1", "2001:DB8::1", "2001:db8:0:0:0:0:0:1", "2001:0db8:0000:0000:0000:0000:0000:0001", "[2001:db8::1]",
            "[2001:db8::1]:443",
        ]
        for spelling in spellings {
            #expect(proxies.clientAddress(peer: peer, headers: headers([("X-Forwarded-For", spelling)])) == "2001:db8::1", "\(spelling)")
        }
        for mapped in ["::ffff:198.51.100.7", "::FFFF:c633:6407", "[::ffff:198.51.100.7]:80"] {
            #expect(proxies.clientAddress(peer: peer, headers: headers([("X-Forwarded-For", mapped)])) == "198.51.100.7", "\(mapped)")
        }
        // A dual-stack listener (--host ::) sees IPv4 peers as mapped addresses: still the trusted 127.0.0.1.
        let mappedPeer = try SocketAddress(ipAddress: "::ffff:127.0.0.1", port: 40_000)
        #expect(proxies.clientAddress(peer: mappedPeer, headers: headers([("X-Forwarded-For", "198.51.100.9")])) == "198.51.100.9")
        let mappedStranger = try SocketAddress(ipAddress: "::ffff:203.0.113.9", port: 40_000)
        #expect(proxies.clientAddress(peer: mappedStranger, headers: HTTPFields()) == "203.0.113.9")
        // Mapped trusted ranges are the IPv4 ranges they map.
        let mappedRange = try TrustedProxies(["::ffff:10.0.0.0/104"])
        #expect(mappedRange.clientAddress(peer: peer, headers: headers([("X-Forwarded-For", "198.51.100.9")])) == "198.51.100.9")
    }

    @Test func badEntriesAreRefusedWithTheirReason() {
        #expect(throws: PresenceError.self) { try TrustedProxies(["10.0.0.0/33"]) }
        #expect(throws: PresenceError.self) { try TrustedProxies(["lb.internal"]) }
        #expect(throws: PresenceError.self) { try TrustedProxies(["::1/129"]) }
        #expect((try? TrustedProxies(["::1/128", "0.0.0.0/0"])) != nil)
    }

    /// Over real sockets: behind a trusted proxy each client has its own budget; without trust,
    /// the header buys nothing.
    @Test(arguments: [true, false])
    func perAddressLimitsCountForwardedClients(trusted: Bool) async throws {
        try await withServer(configure: {
            $0.addressRequestsPerSecond = 0.001
            $0.addressRequestBurst = 2
            if trusted { $0.trustedProxies = try! TrustedProxies(["127.0.0.1"]) }
        }) { http in
            var statuses: [Int] = []
            for client in ["198.51.100.1", "198.51.100.2"] {
                for attempt in 0..<3 {
                    let reply = try await http.call(
                        .post, "/api/heartbeat", body: #"{"roomId":"r","userId":"u\#(attempt)","sessionId":"\#(client)-\#(attempt)"}"#,
                        headers: [HTTPField.Name("X-Forwarded-For")!: client])
                    statuses.append(reply.status)
                }
            }
            #expect(statuses == (trusted ? [200, 200, 429, 200, 200, 429] : [200, 200, 429, 429, 429, 429]))
        }
    }
}
