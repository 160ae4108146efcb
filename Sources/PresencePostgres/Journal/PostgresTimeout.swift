import PostgresNIO
import PresenceStore

/// Runs `body`, or throws once `limit` has passed, without waiting for `body` to notice: a
/// statement on a connection that hangs (a cut network, a pool waiting for a server that is
/// down) must not hold the writer, and every caller with it. `body` is cancelled and left to
/// end on its own; the epoch keeps it from touching memory afterwards.
func withTimeout<Value: Sendable>(
    _ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> Value
) async throws -> Value {
    let outcome = Promise<Result<Value, any Error>>()
    let work = Task {
        do { outcome.fulfil(.success(try await body())) } catch { outcome.fulfil(.failure(error)) }
    }
    let timer = Task {
        guard (try? await Task.sleep(for: limit)) != nil else { return }
        outcome.fulfil(.failure(PostgresStoreError("\(what) took longer than \(limit)")))
        work.cancel()
    }
    let result = await outcome.value
    timer.cancel()
    return try result.get()
}

extension PostgresJournal {
    static func describe(_ error: PSQLError) -> String {
        if let message = error.serverInfo?[.message] { return message }
        return "\(error.code)"
    }

    /// For logs: PostgresNIO hides a server's message unless asked for it.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError { return describe(error) }
        return "\(error)"
    }
}
