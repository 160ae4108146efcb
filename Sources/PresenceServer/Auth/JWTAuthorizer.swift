import Foundation
import JWTKit
import PresenceCore
import Synchronization

/// JSON Web Tokens: `heartbeat` and `update` act only for the token's subject; `list` and
/// `subscribe` need any valid token. `exp` is required and enforced; `nbf`, `iss` and `aud`
/// when configured. Only the algorithms of the configured keys are accepted, so `alg: none`
/// and algorithm confusion (an HS256 token "signed" with an RSA public key) are refused.
public struct JWTAuthorizer: PresenceAuthorizer {
    public struct Configuration: Sendable {
        /// HS256 shared secret.
        public var hmacSecret: String?
        /// PEM-encoded RS256 or ES256 public keys (contents, not paths).
        public var publicKeysPEM: [String] = []
        /// A JWKS document (contents).
        public var jwks: String?
        public var issuer: String?
        public var audience: String?
        /// Allowed clock skew for `exp` and `nbf`, in seconds.
        public var leeway: Int64 = 30

        public init() {}
    }

    struct Payload: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        var name: String?
        var picture: String?
        /// The users this token may watch: an array of user ids, or "*" for any.
        var presenceWatch: WatchClaim?

        enum CodingKeys: String, CodingKey {
            case sub, exp, nbf, iss, aud, name, picture
            case presenceWatch = "presence_watch"
        }

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    struct WatchClaim: Codable, Sendable {
        let scope: WatchScope

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let wildcard = try? container.decode(String.self), wildcard == "*" {
                scope = .anyone
            } else {
                scope = .users(IDSet(try container.decode([String].self)))
            }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch scope {
            case .anyone: try container.encode("*")
            case .users(let userIds): try container.encode(userIds.sorted())
            }
        }
    }

    /// One key collection per accepted algorithm: the token's `alg` picks the collection, so a
    /// token is only ever checked with a key of the algorithm it claims.
    let keysByAlgorithm: [String: JWTKeyCollection]
    var acceptedAlgorithms: Set<String> { Set(keysByAlgorithm.keys) }
    let configuration: Configuration
    let clock: any WallClock
    /// Tokens that passed, with what they gave: a client sends the same token with every
    /// request, and checking its signature is the dearest part of most requests.
    private let verified = VerifiedTokens(capacity: 10_000)

    public init(configuration: Configuration, clock: any WallClock = SystemWallClock()) async throws {
        var collections: [String: JWTKeyCollection] = [:]
        func collection(_ algorithm: String) -> JWTKeyCollection {
            if let existing = collections[algorithm] { return existing }
            let created = JWTKeyCollection()
            collections[algorithm] = created
            return created
        }
        if let secret = configuration.hmacSecret {
            guard secret.utf8.count >= 32 else {
                throw PresenceError.invalidArgument("the JWT HS256 secret must be at least 32 bytes")
            }
            await collection("HS256").add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        }
        for pem in configuration.publicKeysPEM {
            if let key = try? ES256PublicKey(pem: pem) {
                await collection("ES256").add(ecdsa: key)
            } else if let key = try? Insecure.RSA.PublicKey(pem: pem) {
                await collection("RS256").add(rsa: key, digestAlgorithm: .sha256)
            } else {
                throw PresenceError.invalidArgument("a JWT public key is neither an ES256 (P-256) nor an RSA public key in PEM form")
            }
        }
        if let jwks = configuration.jwks {
            let document: JWKS
            do {
                document = try JSONDecoder().decode(JWKS.self, from: Data(jwks.utf8))
            } catch {
                throw PresenceError.invalidArgument("the JWKS document could not be read: \(error)")
            }
            for key in document.keys {
                guard let algorithm = key.algorithm?.rawValue else {
                    throw PresenceError.invalidArgument("every key of the JWKS document needs its alg")
                }
                do {
                    // The first key of an algorithm also serves tokens that name no kid.
                    let isFirst = collections[algorithm] == nil
                    try await collection(algorithm).add(jwk: key, isDefault: isFirst)
                } catch {
                    throw PresenceError.invalidArgument("a JWKS key could not be used: \(error)")
                }
            }
        }
        guard !collections.isEmpty else {
            throw PresenceError.invalidArgument("JWT authentication needs a secret, a public key or a JWKS document")
        }
        self.keysByAlgorithm = collections
        self.configuration = configuration
        self.clock = clock
    }

    public func authenticate(token: String?) async throws -> Identity? {
        guard let token, !token.isEmpty else { throw PresenceError.unauthenticated("a user token is required") }
        if let identity = verified.identity(for: token, now: clock.nowMillis()) { return identity }
        let identity = try await verify(token)
        verified.insert(identity, for: token, now: clock.nowMillis())
        return identity
    }

    public func authenticateAtOnce(token: String?) -> AuthenticationAtOnce {
        guard let token, let identity = verified.identity(for: token, now: clock.nowMillis()) else { return .mustWait }
        return .identity(identity)
    }

    private func verify(_ token: String) async throws -> Identity {
        let algorithm = try Self.headerAlgorithm(of: token)
        guard let keys = keysByAlgorithm[algorithm] else {
            throw PresenceError.unauthenticated("tokens signed with \(algorithm) are not accepted")
        }
        let payload: Payload
        do {
            payload = try await keys.verify(token, as: Payload.self)
        } catch {
            throw PresenceError.unauthenticated("the user token is not valid")
        }
        let now = clock.nowMillis()
        let leeway = configuration.leeway * 1000
        guard let exp = payload.exp else { throw PresenceError.unauthenticated("the user token has no exp") }
        // A far `exp` is legal: it expires when the server's range of times ends.
        let expiresAt = Self.epochMillis(exp.value) ?? (exp.value.timeIntervalSince1970 > 0 ? Self.latestClaimMillis : -Self.latestClaimMillis)
        guard now < expiresAt + leeway else { throw PresenceError.unauthenticated("the user token has expired") }
        if let nbf = payload.nbf {
            guard let notBefore = Self.epochMillis(nbf.value) else {
                throw PresenceError.unauthenticated("the user token's nbf is out of range")
            }
            guard now + leeway >= notBefore else { throw PresenceError.unauthenticated("the user token is not valid yet") }
        }
        if let issuer = configuration.issuer, payload.iss?.value != issuer {
            throw PresenceError.unauthenticated("the user token is from another issuer")
        }
        if let audience = configuration.audience, payload.aud?.value.contains(audience) != true {
            throw PresenceError.unauthenticated("the user token is for another audience")
        }
        let userId = payload.sub.value
        do {
            try Validate.identifier(userId, field: "sub")
        } catch {
            throw PresenceError.unauthenticated("the user token's sub is not a valid user id")
        }
        let name = try? Self.validName(payload.name)
        let image = try? Self.validImage(payload.picture)
        return Identity(
            userId: userId, name: name ?? nil, image: image ?? nil, expiresAt: expiresAt + leeway,
            mayWatch: payload.presenceWatch?.scope ?? .users([]))
    }

    public func authorize(_ identity: Identity?, _ action: PresenceAction) async throws {
        try decide(identity, action)
    }

    public func allowsAtOnce(_ identity: Identity?, _ action: PresenceAction) -> Bool {
        (try? decide(identity, action)) != nil
    }

    /// The whole decision reads only the identity the token gave.
    private func decide(_ identity: Identity?, _ action: PresenceAction) throws(PresenceError) {
        guard let identity else { throw .unauthenticated("a user token is required") }
        switch action {
        case .join(_, let userId), .update(_, let userId):
            guard identity.userId.isSameID(as: userId) else {
                throw .permissionDenied("the user token is for \(identity.userId), not \(userId)")
            }
        case .read:
            break
        case .watch(let userIds):
            if let other = userIds.first(where: { !$0.isSameID(as: identity.userId) && !identity.mayWatch.allows($0) }) {
                throw .permissionDenied("the user token for \(identity.userId) may not watch \(other) (see its presence_watch claim)")
            }
        }
    }

    /// Tokens whose signature and claims checked out, until they expire. The keys never change,
    /// so a token that passed once passes again until its `exp` (with the leeway), which the
    /// identity carries; `nbf` is past once it passed. Only signed tokens get in, so the
    /// capacity bounds memory, not an attacker's guesses.
    final class VerifiedTokens: Sendable {
        private let identities = Mutex<[String: Identity]>([:])
        let capacity: Int

        init(capacity: Int) { self.capacity = capacity }

        func identity(for token: String, now: Int64) -> Identity? {
            guard let identity = identities.withLock({ $0[token] }), now < identity.expiresAt ?? .max else { return nil }
            return identity
        }

        func insert(_ identity: Identity, for token: String, now: Int64) {
            identities.withLock { identities in
                if identities.count >= capacity {
                    identities = identities.filter { now < $0.value.expiresAt ?? .max }
                    // Still full of live tokens: start over rather than track their use.
                    if identities.count >= capacity { identities.removeAll(keepingCapacity: true) }
                }
                identities[token] = identity
            }
        }

        var count: Int { identities.withLock { $0.count } }
    }

    /// Claim times further from 1970 than this (about 285,000 years) are out of the server's
    /// range: far inside Int64 milliseconds, so a time plus a leeway cannot overflow.
    static let latestClaimMillis: Int64 = 1 << 53

    /// A claim's time in milliseconds since 1970; nil when it is not finite or out of range.
    /// A token's numbers are the signer's choice, and converting one beyond Int64 traps.
    static func epochMillis(_ date: Date) -> Int64? {
        let millis = (date.timeIntervalSince1970 * 1000).rounded(.down)
        guard millis.isFinite, abs(millis) <= Double(latestClaimMillis) else { return nil }
        return Int64(millis)
    }

    static func validName(_ name: String?) throws -> String? {
        try Validate.name(name)
        return name
    }

    static func validImage(_ image: String?) throws -> String? {
        try Validate.image(image)
        return image
    }

    /// The `alg` of a compact JWT's header, read before any verification.
    static func headerAlgorithm(of token: String) throws -> String {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw PresenceError.unauthenticated("the user token is not a JWT") }
        var base64 = parts[0].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64),
            let header = try? JSONDecoder().decode([String: JSONValue].self, from: data),
            case .string(let algorithm)? = header["alg"]
        else {
            throw PresenceError.unauthenticated("the user token's header is not readable")
        }
        guard algorithm.lowercased() != "none" else {
            throw PresenceError.unauthenticated("unsigned tokens (alg none) are not accepted")
        }
        return algorithm
    }
}
