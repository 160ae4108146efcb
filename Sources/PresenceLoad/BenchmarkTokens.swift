import Crypto
import Foundation

/// HS256 user tokens for a server started with `--auth jwt --jwt-secret BenchmarkTokens.secret`.
enum BenchmarkTokens {
    static let secret = "presence-bench-secret-of-at-least-32-bytes"
    static let serverArguments = ["--auth", "jwt", "--jwt-secret", secret]

    /// A token for `subject`, valid for an hour; `serial` makes tokens of one subject differ.
    static func token(subject: String, serial: Int = 0) -> String {
        let header = base64URL(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let expiry = Int(Date().timeIntervalSince1970) + 3_600
        let payload = base64URL(Data(#"{"sub":"\#(subject)","exp":\#(expiry),"jti":"\#(serial)"}"#.utf8))
        let signature = HMAC<SHA256>.authenticationCode(for: Data("\(header).\(payload)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return "\(header).\(payload).\(base64URL(Data(signature)))"
    }

    private static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
