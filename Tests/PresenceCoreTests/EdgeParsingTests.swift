import Testing
@testable import PresenceCore

/// What the server reads of a request's head before any route: origins, forwarded addresses and
/// the WebSocket handshake's key, each in the one reading that the fuzzer holds them to.
@Suite struct EdgeParsingTests {
    @Test func originsReadAsRFC6454Origins() {
        #expect(WebOrigin("HTTPS://App.Example:443") == WebOrigin("https://app.example"))
        #expect(WebOrigin("http://app.example:80")?.serialized == "http://app.example")
        #expect(WebOrigin("http://[::1]:8080")?.serialized == "http://[::1]:8080")
        // Found by the fuzzer: a colon in the host read as a host, and did not read back.
        for opaque in ["null", "file://", "https://ap:.example:443", "https://a@b", "https://", "https://h:99999", "https://h:", "x", "https://[zz]"] {
            #expect(WebOrigin(opaque) == nil, "\(opaque)")
        }
    }

    @Test func addressesHaveOneSpelling() {
        #expect(IPAddress.canonical("2001:0DB8:0:0::1") == "2001:db8::1")
        #expect(IPAddress.canonical("::FFFF:10.1.2.3") == "10.1.2.3")
        #expect(IPAddress.canonical("010.1.2.3") == nil)
        #expect(ForwardingHeader.forwarded.chain([#"for="[2001:DB8::1]:443", for=unknown;proto=https"#, "for=_x"]) == ["2001:db8::1", nil, nil])
        #expect(ForwardingHeader.xForwardedFor.chain(["1.2.3.4:80, , ::ffff:5.6.7.8"]) == ["1.2.3.4", nil, "5.6.7.8"])
    }

    @Test func aHandshakeKeyIsSixteenBytesOfBase64() {
        #expect(WebSocketHandshake.isSixteenBytesOfBase64("dGhlIHNhbXBsZSBub25jZQ=="))
        for bad in ["dGhlIHNhbXBsZSBub25jZR==", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ==x", "dGhlIHNhbXBsZSBub25j*Q==", ""] {
            #expect(!WebSocketHandshake.isSixteenBytesOfBase64(Substring(bad)), "\(bad)")
        }
    }
}
