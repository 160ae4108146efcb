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

    @Test func forwardedWinsOverXForwardedForAndAcceptsPortsAndIPv6() throws {
        let proxies = try TrustedProxies(["10.0.0.5"])
        let both = headers([
            ("Forwarded", #"for="[2001:db8::17]:4711";proto=https, for=10.0.0.9"#),
            ("X-Forwarded-For", "198.51.100.7"),
        ])
        #expect(proxies.clientAddress(peer: peer, headers: both) == "10.0.0.9")
        let ipv6 = headers([("Forwarded", #"for="[2001:db8::17]:4711""#)])
        #expect(proxies.clientAddress(peer: peer, headers: ipv6) == "2001:db8::17")
        let withPort = headers([("Forwarded", "for=198.51.100.7:8080;by=10.0.0.5")])
        #expect(proxies.clientAddress(peer: peer, headers: withPort) == "198.51.100.7")
        // Obfuscated or unknown names are no address: the proxy's own address counts.
        let unknown = headers([("Forwarded", "for=unknown"), ("X-Forwarded-For", "198.51.100.7")])
        #expect(proxies.clientAddress(peer: peer, headers: unknown) == "10.0.0.5")
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
