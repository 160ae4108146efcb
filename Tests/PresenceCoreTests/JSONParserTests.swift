import Foundation
import Testing
import PresenceTestSupport
@testable import PresenceCore

@Suite struct JSONParserTests {
    func parse(_ text: String) throws -> JSONValue {
        try JSONParser.parse(Array(text.utf8))
    }

    @Test func parsesWhatJSONDecoderParses() throws {
        let corpus = [
            #"{"roomId":"r","userId":"u","sessionId":"s","interval":10000}"#,
            #"  {"a" : [1, -2.5, 3e2, 0, -0, true, false, null, "x\ny\"z\\\/", {}, []] }  "#,
            #""\u00e9\u4e2d\ud83d\ude00""#, #"9223372036854775807"#, #"-9223372036854775808"#, #"1e400"#.replacingOccurrences(of: "400", with: "30"),
            #"[[[[["deep"]]]]]"#, #"{"emoji":"🎉","accents":"ünïcödé"}"#, "0.000001", "12345678901234567890",
        ]
        for text in corpus {
            let expected = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
            let parsed = try parse(text)
            // Same value (numbers compare by what they mean, as JSON does).
            #expect(sameValue(parsed, expected), "\(text): \(parsed.compactJSON) vs \(expected.compactJSON)")
        }
    }

    /// Equal as JSON values: numbers by what they mean (3e2 is 300), containers member by member.
    func sameValue(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.integer(let x), .double(let y)), (.double(let y), .integer(let x)): return Double(x) == y
        case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy(sameValue)
        case (.object(let x), .object(let y)):
            return x.keys.sorted() == y.keys.sorted() && x.keys.allSatisfy { sameValue(x[$0]!, y[$0]!) }
        default: return a == b
        }
    }

    @Test func writtenValuesParseBackExactly() throws {
        var generator = SeededGenerator(seed: 99)
        func randomValue(_ depth: Int) -> JSONValue {
            switch generator.next() % (depth > 3 ? 5 : 7) {
            case 0: return .null
            case 1: return .bool(generator.next() % 2 == 0)
            case 2: return .integer(Int64(bitPattern: generator.next()))
            case 3: return .double(Double(Int64(bitPattern: generator.next() >> 11)) / 1024)
            case 4:
                let scalars = (0..<Int(generator.next() % 8)).map { _ in
                    Unicode.Scalar([0x41, 0x22, 0x5C, 0x0A, 0x01, 0xE9, 0x4E2D, 0x1F600][Int(generator.next() % 8)])!
                }
                return .string(String(String.UnicodeScalarView(scalars)))
            case 5: return .array((0..<Int(generator.next() % 4)).map { _ in randomValue(depth + 1) })
            default:
                var members: [String: JSONValue] = [:]
                for index in 0..<Int(generator.next() % 4) { members["k\(index)"] = randomValue(depth + 1) }
                return .object(members)
            }
        }
        for _ in 0..<500 {
            let value = randomValue(0)
            #expect(try parse(value.compactJSON) == value)
        }
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", #"{"a":1,}"#, "01", "1.", "-", "1e", ".5", "+1", "NaN", "Infinity", "tru", "nul",
        #"'single'"#, #""unterminated"#, "\"tab\tinside\"", #""\x""#, #""\ud800""#, #""\udc00x""#, #"{"a" 1}"#,
        #"{1:2}"#, "[1 2]", "1 2", #"{"a":1}}"#, "1e999",
    ])
    func refusesInvalidJSON(_ text: String) {
        #expect(throws: JSONParser.SyntaxError.self) { try parse(text) }
    }

    @Test func refusesInvalidUTF8AndDeepNesting() {
        #expect(throws: JSONParser.SyntaxError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        let deep = String(repeating: "[", count: 1_000) + String(repeating: "]", count: 1_000)
        #expect(throws: JSONParser.SyntaxError.self) { try parse(deep) }
        let fine = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        #expect(throws: Never.self) { try parse(fine) }
    }

    /// Requests are read as members: the same fields as the parsed object, the last of a name
    /// given twice, UTF-8 past ASCII kept and validated, and the same errors.
    @Test func membersAreTheObjectsFields() throws {
        let text = #"{"type":"heartbeat","name":"Zoë \u00e9","id":1,"id":"two","data":{"a":[1,{"b":null}]}}"#
        let members = try #require(try JSONParser.parseMembers(array: Array(text.utf8)))
        #expect(members.map(\.name) == ["type", "name", "id", "id", "data"])
        guard case .object(let fields) = try parse(text) else { throw TestFailure("not an object") }
        let object = try JSONObject(parsing: Array(text.utf8))
        for (name, value) in fields { #expect(object[name] == value) }
        #expect(object["id"] == .string("two"))
        #expect(object["name"] == .string("Zoë é"))
        #expect(object["missing"] == nil)
        #expect(try JSONParser.parseMembers(array: Array("[1]".utf8)) == nil)
        #expect(throws: JSONParser.SyntaxError.self) { try JSONParser.parseMembers(array: Array(#"{"a":1} x"#.utf8)) }
        #expect(throws: JSONParser.SyntaxError.self) { try JSONParser.parseMembers(array: [0x7B, 0x22, 0xC3, 0x28, 0x22, 0x3A, 0x31, 0x7D]) }
        #expect(throws: PresenceError.invalidArgument("expected a JSON object")) { try JSONObject(parsing: Array("[]".utf8)) }
    }
}
