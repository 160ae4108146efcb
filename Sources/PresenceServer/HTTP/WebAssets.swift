import Foundation
import Hummingbird
import HTTPTypes
import NIOCore

/// The browser client, the face pile, the demo page and the OpenAPI document, bundled with the package and
/// served from memory with an ETag, so a reload costs a 304.
struct WebAssets: Sendable {
    struct Asset: Sendable {
        let body: ByteBuffer
        let contentType: String
        let cacheControl: String
        let etag: String
    }

    let assets: [String: Asset]

    /// Reads the bundled files once; a missing bundle (a broken install) serves nothing rather than crashing.
    static func load() -> WebAssets {
        let files: [(path: String, file: String, type: String, cache: String)] = [
            ("/", "index.html", "text/html; charset=utf-8", "no-cache"),
            ("/presence.js", "presence.js", "text/javascript; charset=utf-8", "public, max-age=300"),
            ("/presence-facepile.js", "presence-facepile.js", "text/javascript; charset=utf-8", "public, max-age=300"),
            ("/presence-react.js", "presence-react.js", "text/javascript; charset=utf-8", "public, max-age=300"),
            ("/openapi.json", "openapi.json", "application/json; charset=utf-8", "no-cache"),
        ]
        var assets: [String: Asset] = [:]
        guard let folder = Bundle.module.url(forResource: "web", withExtension: nil) else { return WebAssets(assets: [:]) }
        for entry in files {
            guard let data = try? Data(contentsOf: folder.appendingPathComponent(entry.file)) else { continue }
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in data {
                hash ^= UInt64(byte)
                hash = hash &* 0x100_0000_01b3
            }
            assets[entry.path] = Asset(
                body: ByteBuffer(bytes: data), contentType: entry.type, cacheControl: entry.cache,
                etag: "\"\(String(hash, radix: 16))\"")
        }
        return WebAssets(assets: assets)
    }

    func register<Context: RequestContext>(on router: Router<Context>) {
        for (path, asset) in assets {
            router.get(RouterPath(path)) { request, _ -> Response in
                var headers: HTTPFields = [
                    .contentType: asset.contentType, .cacheControl: asset.cacheControl, .eTag: asset.etag,
                    .init("X-Content-Type-Options")!: "nosniff",
                ]
                if request.headers[.ifNoneMatch] == asset.etag {
                    headers[.contentType] = nil
                    return Response(status: .notModified, headers: headers)
                }
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: asset.body))
            }
            HTTPRoutes.refuseOtherMethods(on: router, path: RouterPath(path), allowed: [.get])
        }
    }
}
