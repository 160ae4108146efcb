import Foundation
import JWTKit
import PresenceCore

/// Keys made for these tests only (never used anywhere else), and token minting helpers.
enum TestKeys {
    static let hmacSecret = "a-test-secret-that-is-long-enough-for-hs256!"
    static let rsaPrivate = """
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCRycA+TJVDL/wF
nOBJFVctkKjon3sJQPH1IFrNT3qncfm/Vmie6VD1Sf9j3wT1iUYIqiY4PiFdz6iA
MFGNvr/C3Gm9za8mwbVzdo0n5uDDBFM3kuUsDzULKp2WaBi3kgMJq389nOom8HBs
9qlOj3nv6x6nRkaP29JdOAHhL+p2c5uR2VM2KlbJHLjhygZ8omDBgvmN50u8eaya
8Lr3Wgpbeova7b1NCvmBDMtQmzyuaG2g5aQwIcicp5mVss+LeRES6mNPrD8nqi7V
+Vtus26qVcXxZCR7ctQBtt5BwDGJ/ulZAls42WKCE38tx40JxQmepxTxsVcyrwVw
MNKvDG9bAgMBAAECggEABsY5sfHMEJWtUwA+c2O6K9D1HSFMzc0s3eEvGito/Yvj
X4hr2+qA8dm9tAEI3kH1NT52zS+lGRKNRJU6M0+oSHoGfdfanWUfgd1OsAp5HW0l
7GCqi0wSzZ4hOXwRasJIDg4TUqROd+W9sgqAkbjc1F2rP6zMmmJ/P9UNtufx/Kc1
NqJxTfmty/YDgwZ/QlsXq0lqJZghZLKQjkBK50XET44MsxE0g4xxwZmLG0mqi+S7
HnX5Vt9ZDGEnqMmLZRLDjYNrc+ms6+Ju5hoCi/8PEu4wJm1HEwffo0QNMwsxElqP
l3hCxRb+m40RSWQ27tckkbYUoMvQ5d2c7QteSQ7r2QKBgQDJCZ5fJmnatTQWPWwC
y6VLuOhfAazmWyuoOP/ngoryMrlqcewgz5BL/FQF0fLNGr0Ga6AGgwsNpis0tjfW
fHzSUmGx5cUWjRtyKzHX0ooDSTeXzaOtA06UAwb69YtoxNHOkuNATLpe5F0T52lq
umtvrzZn/KDGSi8MyPISup3qEwKBgQC5pUlXgfiTEwZyWjjZ3XZmtBiFMdx7FUOW
th5Kp0zfTg6S9l4s+7JE1pmgDvbl9YfCTO2Z1sKn/L+XbO0TDLPHoH/egLt8CD1Y
/3kag0DO/NdXVpDv0q7QtSplsJAAMrvonEDUCzPcuWfD/9rQzimbvx2xWO3SqiHF
GbcrQHeOmQKBgFyb77bJTU4Q1zO/i7gl87lULsdFUE61hQDzcP9G5Zb4wu1EGZBr
zX8Td+lOc9kEDjuc7JTTXQ4mlBSuND68DgwdIx/+RrJCwnfvagCP3j/xRIjLlDCp
K1OHqXmGD3ht4nCUvdbrAZeg/zeiDK+7vK4wOpHgkHeHyPDMyKbUDNa9AoGAZm1S
pOx5+LOzh95Npa7yB8JwEPUsv+BAlWPQHMJnwIExu1YhKdKJTj/VLSF0ifZJPCPz
qEB8z/C8yNB5kVwdyRO92UbPqqRlLLhv2ff3Bv0r1u1VNGzatR5v0QF0whc75CBq
CFRR/gNxxAtjcHd/L4Zn3JTDSstBrJz+meeMz2kCgYEAwrflkpT++KeM2CexHEPU
rZRp9IHKnXr5cwk+n4AaQleuYGWFMue7Z6mVRj85YAtjaH/6e/0AwNbF+2wNCdUY
dhmKsiDm2NCGRMTS/FTj5k+MUvdNQrMmGNoJUW4kRi9xU2Vj2pa4HwL/8Q0i0SuZ
pyHKRvQkgEf5i5lRK1VKVPM=
-----END PRIVATE KEY-----
"""
    static let rsaPublic = """
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkcnAPkyVQy/8BZzgSRVX
LZCo6J97CUDx9SBazU96p3H5v1ZonulQ9Un/Y98E9YlGCKomOD4hXc+ogDBRjb6/
wtxpvc2vJsG1c3aNJ+bgwwRTN5LlLA81CyqdlmgYt5IDCat/PZzqJvBwbPapTo95
7+sep0ZGj9vSXTgB4S/qdnObkdlTNipWyRy44coGfKJgwYL5jedLvHmsmvC691oK
W3qL2u29TQr5gQzLUJs8rmhtoOWkMCHInKeZlbLPi3kREupjT6w/J6ou1flbbrNu
qlXF8WQke3LUAbbeQcAxif7pWQJbONlighN/LceNCcUJnqcU8bFXMq8FcDDSrwxv
WwIDAQAB
-----END PUBLIC KEY-----
"""
    static let ecPrivate = """
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIFNBVyg9+dr7fgNlgZDYEhePHVxsi9lw8G/M8+knJI4WoAoGCCqGSM49
AwEHoUQDQgAEm8lB0gmR/Hy5FSmJCaHl4NZkKwGfw0wo33cLYJtAvYngPm9rVjtx
A8q7UbYf2ubAkGy87fXXsMwxEGAvZR0MGg==
-----END EC PRIVATE KEY-----
"""
    static let ecPublic = """
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEm8lB0gmR/Hy5FSmJCaHl4NZkKwGf
w0wo33cLYJtAvYngPm9rVjtxA8q7UbYf2ubAkGy87fXXsMwxEGAvZR0MGg==
-----END PUBLIC KEY-----
"""

    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        var name: String?
        var picture: String?
        /// `presence_watch`: a JSON array of user ids, or "*".
        var presence_watch: JSONValue?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    enum Signer { case hmac(String), rsa, ecdsa }

    /// A token for `subject`, valid for `lifetime` seconds from `now` (negative: already expired).
    static func token(
        _ subject: String, signer: Signer = .hmac(hmacSecret), now: Date = Date(), lifetime: TimeInterval = 3_600,
        notBefore: Date? = nil, issuer: String? = "presence-tests", audience: String? = "presence",
        name: String? = nil, picture: String? = nil, withExpiry: Bool = true, watch: JSONValue? = nil
    ) async throws -> String {
        let keys = JWTKeyCollection()
        switch signer {
        case .hmac(let secret): await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        case .rsa: await keys.add(rsa: try Insecure.RSA.PrivateKey(pem: rsaPrivate), digestAlgorithm: .sha256)
        case .ecdsa: await keys.add(ecdsa: try ES256PrivateKey(pem: ecPrivate))
        }
        let claims = Claims(
            sub: .init(value: subject), exp: withExpiry ? .init(value: now.addingTimeInterval(lifetime)) : nil,
            nbf: notBefore.map { .init(value: $0) }, iss: issuer.map { .init(value: $0) },
            aud: audience.map { .init(value: [$0]) }, name: name, picture: picture, presence_watch: watch)
        return try await keys.sign(claims)
    }

    /// An unsigned token (`alg: none`), which a server must never accept.
    static func unsignedToken(_ subject: String) -> String {
        func encode(_ json: String) -> String {
            Data(json.utf8).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        let exp = Int(Date().timeIntervalSince1970) + 3_600
        return encode(#"{"alg":"none","typ":"JWT"}"#) + "."
            + encode(#"{"sub":"\#(subject)","exp":\#(exp),"iss":"presence-tests","aud":"presence"}"#) + "."
    }
}
