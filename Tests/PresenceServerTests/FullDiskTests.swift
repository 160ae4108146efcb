import Foundation
import Testing
import PresenceServer
import PresenceSQLite
import PresenceStore

#if canImport(Glibc)
import Glibc
#endif

/// Whether this machine lets the tests mount a tmpfs of their own.
let canMountTmpfs: Bool = {
    let folder = temporaryDirectory(named: "mount-probe")
    guard (try? runToCompletion("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", folder])) == 0 else { return false }
    _ = try? runToCompletion("/bin/umount", [folder])
    return true
}()

/// The SQLite store on a real full filesystem (a small tmpfs, where the machine lets the tests
/// mount one): writes answer 503 and change nothing, `/health` says 503 so a load balancer stops
/// sending traffic, and both recover once there is room again.
@Suite(.enabled(if: canMountTmpfs, "needs to mount a tmpfs (root on Linux)"))
struct FullDiskTests {

    @Test func aFullDiskFailsHealthAndWritesUntilThereIsRoom() async throws {
        let folder = temporaryDirectory(named: "full-disk")
        #expect(try runToCompletion("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", folder]) == 0)
        defer { _ = try? runToCompletion("/bin/umount", ["-l", folder]) }
        let store = try SQLiteStore(directory: folder, aliveMarkInterval: .milliseconds(100))
        try await withServer(store: store) { http in
            _ = try await http.heartbeat(user: "before", session: "before")
            #expect(try await http.call(.get, "/health").status == 200)

            // Take every free byte.
            let filler = folder + "/filler"
            let descriptor = open(filler, O_WRONLY | O_CREAT, 0o600)
            let block = [UInt8](repeating: 0xAB, count: 4_096)
            while block.withUnsafeBytes({ write(descriptor, $0.baseAddress, $0.count) }) > 0 {}
            close(descriptor)

            var refused: Int?
            for index in 0..<500 {
                let reply = try await http.call(
                    .post, "/api/heartbeat", body: #"{"roomId":"room","userId":"u\#(index)","sessionId":"s\#(index)","name":"\#(String(repeating: "n", count: 200))"}"#)
                if reply.status == 503 {
                    #expect(reply.errorCode == "unavailable")
                    refused = index
                    break
                }
                #expect(reply.status == 200)
            }
            let first = try #require(refused, "no write failed on a full disk")
            let health = try await http.call(.get, "/health")
            #expect(health.status == 503, "\(health.body)")
            #expect(health.errorCode == "unavailable")
            // The refused heartbeat changed nothing.
            #expect(try await http.listRoom("room").users.contains { $0.userId == "u\(first)" } == false)

            unlink(filler)
            let deadline = ContinuousClock.now + .seconds(10)
            while try await http.call(.get, "/health").status != 200 {
                guard ContinuousClock.now < deadline else { throw TestFailure("/health did not recover once there was room") }
                try await Task.sleep(for: .milliseconds(50))
            }
            _ = try await http.heartbeat(user: "after", session: "after")
            #expect(try await http.listRoom("room").users.contains { $0.userId == "after" })
        }
    }
}
