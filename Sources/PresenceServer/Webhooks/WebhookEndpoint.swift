import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PresenceStore
import ServiceLifecycle
import Synchronization

/// One receiver of every presence event, as the server is configured with it.
public struct WebhookEndpoint: Sendable, Hashable {
    /// Where events go. Often a capability (a token in its path or query, a user and password):
    /// it appears only in the admin API, never in logs or metrics, which say `name`.
    public var url: String
    /// How logs, metrics and the admin API name the endpoint: the configured name, or the URL's
    /// host and a short hash of the whole URL (`hooks.example.com-3f2a9c1d`), which tells
    /// endpoints apart without giving away their secrets.
    public var name: String
    /// `whsec_` + base64 of the signing key (Standard Webhooks).
    public var secret: String
    /// A `leave` followed within this window by a `join` of the same user in the same room is
    /// delivered as neither; nil or zero delivers every event.
    public var flapWindow: Duration?
    /// How long failing deliveries are retried before the endpoint is marked failed.
    public var giveUpAfter: Duration

    public init(
        url: String, secret: String, name: String? = nil, flapWindow: Duration? = nil, giveUpAfter: Duration = .seconds(86_400)
    ) throws(PresenceError) {
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = parsed.host
        else {
            // Not the URL itself: this message reaches the log.
            throw .invalidArgument("a webhook URL must be an http or https URL with a host")
        }
        if let name {
            guard !name.isEmpty, name.utf8.count <= 64, name.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 32 && $0 != "\"" && $0 != "\\" }) else {
                throw .invalidArgument("a webhook name is 1 to 64 printable ASCII characters, without spaces, quotes or backslashes")
            }
        }
        _ = try WebhookSignature(secret: secret)
        self.url = url
        self.name = name ?? host + "-" + SHA256.hash(data: Data(url.utf8)).prefix(4).map { String(format: "%02x", $0) }.joined()
        self.secret = secret
        self.flapWindow = flapWindow
        self.giveUpAfter = giveUpAfter
    }
}

extension WebhookEndpoint {
    /// `URL,SECRET` as the repeatable `--webhook` flag gives it. The secret is the part after the
    /// last comma, since a URL's query may hold commas and a secret never does.
    public init(flag: String, flapWindow: Duration?, giveUpAfter: Duration) throws(PresenceError) {
        guard let comma = flag.lastIndex(of: ",") else {
            // Not the flag itself: it holds the secret, and this message reaches the log.
            throw .invalidArgument("--webhook takes URL,SECRET (the secret as whsec_…)")
        }
        try self.init(
            url: String(flag[..<comma]).trimmingCharacters(in: .whitespaces),
            secret: String(flag[flag.index(after: comma)...]).trimmingCharacters(in: .whitespaces),
            flapWindow: flapWindow, giveUpAfter: giveUpAfter)
    }

    /// The endpoints of a webhooks file: a JSON array of `{"url", "secret", "name"?,
    /// "flapSuppressionSeconds"?, "giveUpHours"?}`; what an entry leaves out comes from the flags.
    public static func list(fileContents: String, flapWindow: Duration?, giveUpAfter: Duration) throws(PresenceError) -> [WebhookEndpoint] {
        let json: JSONValue
        do {
            json = try JSONParser.parse(fileContents.utf8)
        } catch {
            throw .invalidArgument("the webhooks file is not JSON: \(error)")
        }
        guard case .array(let entries) = json else {
            throw .invalidArgument("the webhooks file must hold a JSON array of endpoints")
        }
        var endpoints: [WebhookEndpoint] = []
        for (index, entry) in entries.enumerated() {
            guard case .object(let fields) = entry, case .string(let url)? = fields["url"], case .string(let secret)? = fields["secret"] else {
                throw .invalidArgument("webhook \(index + 1) in the file needs \"url\" and \"secret\" strings")
            }
            func seconds(_ name: String, scale: Double) throws(PresenceError) -> Duration? {
                switch fields[name] {
                case nil: return nil
                // At most about 31 years: beyond, milliseconds would not fit an Int64 conversion.
                case .integer(let value)? where value >= 0 && Double(value) * scale <= 1e9:
                    return .milliseconds(Int64(Double(value) * scale * 1_000))
                case .double(let value)? where value >= 0 && value * scale <= 1e9: return .milliseconds(Int64(value * scale * 1_000))
                default: throw .invalidArgument("\(name) of webhook \(index + 1) must be a number of seconds from 0 to 1e9")
                }
            }
            var name: String?
            switch fields["name"] {
            case nil, .null?: name = nil
            case .string(let value)?: name = value
            default: throw .invalidArgument("name of webhook \(index + 1) must be a string")
            }
            endpoints.append(try WebhookEndpoint(
                url: url, secret: secret, name: name, flapWindow: try seconds("flapSuppressionSeconds", scale: 1) ?? flapWindow,
                giveUpAfter: try seconds("giveUpHours", scale: 3_600) ?? giveUpAfter))
        }
        return endpoints
    }
}
