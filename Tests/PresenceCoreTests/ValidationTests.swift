import Foundation
import Testing
@testable import PresenceCore

@Suite struct ValidationTests {
    @Test func identifiersMustBeOneTo256BytesWithoutControlCharacters() throws {
        try Validate.identifier("a", field: "roomId")
        try Validate.identifier(String(repeating: "é", count: 128), field: "roomId")  // 256 bytes
        #expect(throws: PresenceError.self) { try Validate.identifier("", field: "roomId") }
        #expect(throws: PresenceError.self) { try Validate.identifier(String(repeating: "é", count: 129), field: "roomId") }
        #expect(throws: PresenceError.self) { try Validate.identifier("a\nb", field: "roomId") }
        #expect(throws: PresenceError.self) { try Validate.identifier("a\u{7F}", field: "roomId") }
    }

    /// The control-character check is a range test; it must agree with Unicode's own category for every scalar.
    @Test func theControlCharacterCheckMatchesUnicodesCategoryForEveryScalar() {
        var disagreements: [UInt32] = []
        for value in UInt32(0)...0x10FFFF {
            guard let scalar = Unicode.Scalar(value) else { continue }
            let isControl = scalar.properties.generalCategory == .control
            if Validate.hasControlCharacters(String(Character(scalar))) != isControl { disagreements.append(value) }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(10))")
    }

    @Test func errorsNameTheFieldAndCarryTheProtocolCode() {
        do {
            try Validate.identifier("", field: "userId")
            Issue.record("expected an error")
        } catch {
            #expect(error.code == "invalid_argument")
            #expect(error.status == 400)
            #expect(error.message.contains("userId"))
        }
    }

    @Test func intervalDefaultsAndBounds() throws {
        #expect(try Validate.interval(nil) == 10_000)
        #expect(try Validate.interval(1_000) == 1_000)
        #expect(try Validate.interval(300_000) == 300_000)
        #expect(throws: PresenceError.self) { try Validate.interval(999) }
        #expect(throws: PresenceError.self) { try Validate.interval(300_001) }
    }

    @Test func limitDefaultsAndBounds() throws {
        #expect(try Validate.limit(nil) == 104)
        #expect(try Validate.limit(1) == 1)
        #expect(try Validate.limit(1_000) == 1_000)
        #expect(throws: PresenceError.self) { try Validate.limit(0) }
        #expect(throws: PresenceError.self) { try Validate.limit(1_001) }
    }

    @Test func dataIsLimitedTo4KiBOfCompactJSONAndNullClears() throws {
        #expect(try Validate.data(.null) == nil)
        let fits = JSONValue.string(String(repeating: "x", count: 4_094))  // plus two quotes = 4096
        #expect(try Validate.data(fits) == fits)
        do {
            _ = try Validate.data(.string(String(repeating: "x", count: 4_095)))
            Issue.record("expected data_too_large")
        } catch {
            #expect(error.code == "data_too_large")
            #expect(error.status == 413)
        }
    }

    @Test func nameAndImage() throws {
        try Validate.name("Alice")
        #expect(throws: PresenceError.self) { try Validate.name(String(repeating: "a", count: 257)) }
        #expect(throws: PresenceError.self) { try Validate.name("tab\there") }
        try Validate.image("https://example.com/a.png")
        try Validate.image("http://example.com/a.png")
        #expect(throws: PresenceError.self) { try Validate.image("javascript:alert(1)") }
        #expect(throws: PresenceError.self) { try Validate.image("https://") }
        #expect(throws: PresenceError.self) { try Validate.image("https://" + String(repeating: "a", count: 2_048)) }
    }

    @Test func errorBodyIsTheProtocolShape() throws {
        let body = PresenceError.sessionConflict("taken \"here\"").jsonBody
        let parsed = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: [String: String]]
        #expect(parsed?["error"]?["code"] == "session_conflict")
        #expect(parsed?["error"]?["message"] == "taken \"here\"")
    }

    @Test func tokensAreLongRandomAndDistinct() {
        let tokens = (0..<1_000).map { _ in Tokens.make(prefix: "r_") }
        #expect(Set(tokens).count == 1_000)
        // 192 bits in base64url: 32 characters after the prefix.
        #expect(tokens.allSatisfy { $0.count == 34 && $0.hasPrefix("r_") })
    }

    @Test func constantTimeEquality() {
        #expect(Tokens.constantTimeEquals("secret", "secret"))
        #expect(!Tokens.constantTimeEquals("secret", "secreT"))
        #expect(!Tokens.constantTimeEquals("secret", "secret2"))
        #expect(!Tokens.constantTimeEquals("", "x"))
    }
}

@Suite struct JSONValueTests {
    func roundTrip(_ text: String) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    @Test func decodesEveryKindAndWritesCompactSortedJSON() throws {
        let value = try roundTrip(#"{"b": [1, 2.5, true, null, "x"], "a": {"n": -7}}"#)
        #expect(value == .object([
            "b": .array([.integer(1), .double(2.5), .bool(true), .null, .string("x")]),
            "a": .object(["n": .integer(-7)]),
        ]))
        #expect(value.compactJSON == #"{"a":{"n":-7},"b":[1,2.5,true,null,"x"]}"#)
    }

    @Test func largeIntegersSurviveExactly() throws {
        #expect(try roundTrip("9007199254740993") == .integer(9_007_199_254_740_993))
        #expect(try roundTrip("9007199254740993").compactJSON == "9007199254740993")
    }

    @Test func stringsAreEscaped() throws {
        let tricky = "quote\" backslash\\ newline\n tab\t bell\u{07} emoji 🎉"
        let json = JSONValue.string(tricky).compactJSON
        #expect(try roundTrip(json) == .string(tricky))
        #expect(json.contains("\\u0007"))
    }

    @Test func writtenJSONParsesBackToTheSameValue() throws {
        let values: [JSONValue] = [
            .double(0.1), .double(1e300), .double(-2.5e-10), .integer(.min), .integer(.max),
            .array([]), .object([:]), .string(""),
        ]
        for value in values {
            #expect(try roundTrip(value.compactJSON) == value)
        }
    }
}
