import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Standard Webhooks signing: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")).
public struct WebhookSignature: Sendable {
    private let key: SymmetricKey

    public init(secret: String) throws(PresenceError) {
        guard secret.hasPrefix("whsec_"), let bytes = Data(base64Encoded: String(secret.dropFirst("whsec_".count))),
            bytes.count >= 16
        else {
            throw .invalidArgument("a webhook secret is whsec_ followed by the base64 of at least 16 random bytes")
        }
        key = SymmetricKey(data: bytes)
    }

    public func sign(id: String, timestamp: Int64, body: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(id).\(timestamp).\(body)".utf8), using: key)
        return "v1," + Data(mac).base64EncodedString()
    }
}
