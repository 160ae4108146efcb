import Foundation
import HTTPTypes
import Testing
import PresenceServer
import PresenceStore

/// The served OpenAPI document and the server agree: every documented operation exists, and on
/// every documented path each undocumented method is refused with 405. (schemathesis, run by the
/// test script, checks the request and response schemas on top.)
@Suite struct OpenAPITests {
    @Test func everyDocumentedPathAnswersExactlyItsDocumentedMethods() async throws {
        try await withServer { http in
            let reply = try await http.call(.get, "/openapi.json")
            #expect(reply.status == 200)
            #expect(reply.headers[.contentType]?.hasPrefix("application/json") == true)
            guard case .object(let paths)? = reply.json["paths"] else {
                Issue.record("no paths in the document")
                return
            }
            #expect(paths.count >= 12)
            let methods: [HTTPRequest.Method] = [.get, .post, .put, .delete, .patch]
            for (template, item) in paths {
                guard case .object(let operations) = item else { continue }
                // Fill path parameters with a plain id.
                let path = template.replacingOccurrences(of: #"\{[^}]+\}"#, with: "x", options: .regularExpression)
                for method in methods {
                    let documented = operations[method.rawValue.lowercased()] != nil
                    let response = try await http.call(method, path, body: method == .get || method == .delete ? nil : "{}", admin: true)
                    if documented {
                        #expect(![404, 405].contains(response.status) || response.errorCode == "not_found" && path.contains("/x"),
                                "\(method) \(template) is documented but answered \(response.status) \(response.body.prefix(100))")
                        #expect(response.status != 405, "\(method) \(template)")
                    } else {
                        #expect(response.status == 405, "\(method) \(template) is not documented but answered \(response.status)")
                    }
                }
            }
        }
    }

    @Test func documentedOperationsMatchTheHandWrittenProtocol() async throws {
        try await withServer { http in
            let document = try await http.call(.get, "/openapi.json").json
            let expected: [String: [String]] = [
                "/api/heartbeat": ["post"], "/api/list": ["get"], "/api/disconnect": ["post"], "/api/update": ["post"],
                "/api/rooms/{roomId}/users/{userId}/data": ["put"], "/api/rooms/{roomId}/users": ["get"],
                "/api/users/{userId}/rooms": ["get"], "/api/rooms/{roomId}/users/{userId}": ["delete"],
                "/api/rooms/{roomId}": ["delete"], "/api/rooms/{roomId}/rotate-token": ["post"], "/health": ["get"],
                "/metrics": ["get"], "/openapi.json": ["get"], "/api/events": ["get"], "/api/webhooks": ["get"],
                "/api/webhooks/enable": ["post"], "/api/users/status": ["post"],
            ]
            guard case .object(let paths)? = document["paths"] else { throw TestFailure("no paths") }
            var documented: [String: [String]] = [:]
            for (path, item) in paths {
                if case .object(let operations) = item { documented[path] = operations.keys.sorted() }
            }
            #expect(documented == expected)
        }
    }
}
