import Foundation
import PresenceClient
import PresenceCore
import Testing

/// The presence rules both clients implement, checked against the vectors the JavaScript unit
/// tests (`node --test Tests/js`) read too: order, diff application, you-first and the face pile.
@Suite struct SharedVectorTests {
    struct Vectors: Decodable {
        struct Order: Decodable {
            let name: String
            let users: [UserRecord]
            let expected: [String]
        }
        struct Diff: Decodable {
            struct Body: Decodable {
                let upsert: [UserRecord]
                let remove: [String]
            }
            let name: String
            let before: [UserRecord]
            let diff: Body
            let after: [UserRecord]
        }
        struct YouFirst: Decodable {
            let name: String
            let users: [UserRecord]
            let userId: String
            let expected: [String]
        }
        struct FacePile: Decodable {
            struct Face: Decodable, Equatable {
                let userId: String
                let title: String
                let image: String?
                let emoji: String
                let online: Bool
                let away: Bool
                let status: String
                let dataRows: [[String]]
            }
            struct Expected: Decodable {
                let visible: [Face]?
                let overflow: [Face]?
                let visibleUserIds: [String]?
                let overflowUserIds: [String]?
                let overflowCount: Int
                let overflowLabel: String?
            }
            let name: String
            let users: [UserRecord]
            let now: Int64
            let userCount: Int?
            let expected: Expected
        }
        let order: [Order]
        let diffs: [Diff]
        let youFirst: [YouFirst]
        let facePile: [FacePile]
    }

    static let vectors: Vectors = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("vectors/presence-rules.json")
        // A missing or unreadable file fails every test that reads it, with this message.
        guard let data = try? Data(contentsOf: url), let vectors = try? JSONDecoder().decode(Vectors.self, from: data) else {
            fatalError("cannot read the shared vectors at \(url.path)")
        }
        return vectors
    }()

    static func face(_ face: FacePileModel.Face) -> Vectors.FacePile.Face {
        .init(
            userId: face.userId, title: face.title, image: face.imageURL, emoji: face.emoji, online: face.online,
            away: face.away, status: face.status, dataRows: face.dataRows.map { [$0.key, $0.value] })
    }

    @Test func order() {
        for vector in Self.vectors.order {
            #expect(vector.users.sorted(by: UserRecord.precedes).map(\.userId) == vector.expected, "\(vector.name)")
        }
    }

    @Test func diffs() {
        for vector in Self.vectors.diffs {
            let diff = RoomDiff(upsert: vector.diff.upsert, remove: vector.diff.remove)
            #expect(diff.applied(to: vector.before) == vector.after, "\(vector.name)")
        }
    }

    @Test func youFirst() {
        for vector in Self.vectors.youFirst {
            #expect(vector.users.youFirst(vector.userId).map(\.userId) == vector.expected, "\(vector.name)")
        }
    }

    @Test func facePile() {
        for vector in Self.vectors.facePile {
            let model = FacePileModel(users: vector.users, nowMillis: vector.now, userCount: vector.userCount)
            let expected = vector.expected
            if let visible = expected.visible { #expect(model.visible.map(Self.face) == visible, "\(vector.name)") }
            if let overflow = expected.overflow { #expect(model.overflow.map(Self.face) == overflow, "\(vector.name)") }
            if let ids = expected.visibleUserIds { #expect(model.visible.map(\.userId) == ids, "\(vector.name)") }
            if let ids = expected.overflowUserIds { #expect(model.overflow.map(\.userId) == ids, "\(vector.name)") }
            #expect(model.overflowCount == expected.overflowCount, "\(vector.name)")
            if let label = expected.overflowLabel { #expect(model.overflowLabel == label, "\(vector.name)") }
        }
    }

    @Test func theVectorsAreAllThere() {
        #expect(!Self.vectors.order.isEmpty && !Self.vectors.diffs.isEmpty)
        #expect(!Self.vectors.youFirst.isEmpty && !Self.vectors.facePile.isEmpty)
    }

    /// JavaScript's number printing, beyond the few numbers in the vectors.
    @Test(arguments: [
        (1.0, "1"), (-0.5, "-0.5"), (100.0, "100"), (1e21, "1e+21"), (1.5e21, "1.5e+21"), (1e20, "100000000000000000000"),
        (1e-7, "1e-7"), (1.25e-7, "1.25e-7"), (0.000001, "0.000001"), (123.456, "123.456"), (0.1, "0.1"),
        (Double.leastNonzeroMagnitude, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"), (-0.0, "0"), (12345678.9, "12345678.9"),
    ])
    func javaScriptNumbers(value: Double, text: String) {
        let user = UserRecord(userId: "n", online: true, lastDisconnected: 0, onlineSince: 1, data: .array([.double(value)]))
        #expect(FacePileModel(users: [user], nowMillis: 1).visible.first?.dataRows.first?.value == "[\(text)]")
    }
}
