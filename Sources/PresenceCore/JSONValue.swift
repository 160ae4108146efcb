/// Any JSON value, as a user's `data` carries it.
///
/// Integers are kept as `Int64` so that ids and counters come back exactly as
/// they were sent; other numbers are `Double`.
///
/// ```swift
/// let typing: JSONValue = .object(["typing": .bool(true)])
/// typing.compactJSON   // {"typing":true}
/// ```
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case integer(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The value as compact JSON, object keys sorted so equal values encode equally.
    public var compactJSON: String {
        var writer = JSONWriter()
        writer.write(self)
        return writer.output
    }
}

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a JSON value")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

/// Builds compact JSON text by hand: every diff and snapshot goes through it,
/// and a hand-written writer is several times cheaper than `JSONEncoder`.
///
/// ```swift
/// var writer = JSONWriter()
/// writer.object { $0.field("type", "updated"); $0.field("id", requestId) }
/// ```
public struct JSONWriter: Sendable {
    /// `wire` is what the server sends. `javaScript` writes what JavaScript's `JSON.stringify`
    /// does, for text both clients show alike: doubles as `Number.prototype.toString` (`100`,
    /// `1e-7`), and `\b` and `\f` as short escapes.
    public enum Style: Sendable {
        case wire
        case javaScript
    }

    public private(set) var output: String = ""
    /// Whether the next key in the current object needs a comma before it.
    private var needsComma = false
    private let style: Style

    public init(capacity: Int = 256, style: Style = .wire) {
        output.reserveCapacity(capacity)
        self.style = style
    }

    public mutating func raw(_ text: String) {
        output.append(text)
    }

    public mutating func write(_ string: String) {
        output.append("\"")
        var needsEscaping = false
        for unit in string.utf8 where unit < 0x20 || unit == 0x22 || unit == 0x5C {
            needsEscaping = true
            break
        }
        guard needsEscaping else {
            output.append(string)
            output.append("\"")
            return
        }
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": output.append("\\\"")
            case "\\": output.append("\\\\")
            case "\n": output.append("\\n")
            case "\r": output.append("\\r")
            case "\t": output.append("\\t")
            case "\u{08}" where style == .javaScript: output.append("\\b")
            case "\u{0C}" where style == .javaScript: output.append("\\f")
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                output.append("\\u" + String(repeating: "0", count: 4 - hex.count) + hex)
            default:
                output.unicodeScalars.append(scalar)
            }
        }
        output.append("\"")
    }

    public mutating func write(_ value: Int64) {
        output.append(String(value))
    }

    public mutating func write(_ value: Bool) {
        output.append(value ? "true" : "false")
    }

    public mutating func write(_ value: JSONValue) {
        switch value {
        case .null: output.append("null")
        case .bool(let bool): write(bool)
        case .integer(let integer): write(integer)
        case .double(let double):
            // JSON has no NaN or infinity; they cannot arrive from parsed JSON, so this only guards hand-built values.
            guard double.isFinite else {
                output.append("null")
                return
            }
            output.append(style == .javaScript ? Self.javaScriptNumber(double) : String(double))
        case .string(let string): write(string)
        case .array(let elements):
            output.append("[")
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(",") }
                write(element)
            }
            output.append("]")
        case .object(let members):
            output.append("{")
            for (index, key) in members.keys.sorted().enumerated() {
                if index > 0 { output.append(",") }
                write(key)
                output.append(":")
                write(members[key]!)
            }
            output.append("}")
        }
    }

    /// Writes `{`, what `body` writes, and `}`.
    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        output.append("{")
        needsComma = false
        body(&self)
        output.append("}")
        needsComma = true
    }

    /// Writes `"key":` (after a comma unless it is the object's first); the value must follow.
    public mutating func key(_ key: String) {
        if needsComma { output.append(",") }
        write(key)
        output.append(":")
        needsComma = true
    }

    /// A string member; nothing when `value` is nil.
    public mutating func field(_ name: String, _ value: String?) {
        guard let value else { return }
        key(name)
        write(value)
    }

    public mutating func field(_ name: String, _ value: Int64) {
        key(name)
        write(value)
    }

    public mutating func field(_ name: String, _ value: Bool) {
        key(name)
        write(value)
    }

    /// Any JSON member; nothing when `value` is nil (so an absent `data` or `id` stays absent).
    public mutating func field(_ name: String, _ value: JSONValue?) {
        guard let value else { return }
        key(name)
        write(value)
    }

    /// A member whose value `body` writes (an array, a nested object, pre-encoded JSON).
    public mutating func field(_ name: String, _ body: (inout JSONWriter) -> Void) {
        key(name)
        body(&self)
        needsComma = true
    }

    /// An array of strings.
    public mutating func write(_ strings: [String]) {
        output.append("[")
        for (index, string) in strings.enumerated() {
            if index > 0 { output.append(",") }
            write(string)
        }
        output.append("]")
    }
}

extension JSONWriter {
    /// A number as JavaScript's `Number.prototype.toString` writes it (ECMA-262, Number::toString):
    /// the same shortest round-trip digits as Swift's, placed by JavaScript's rules.
    static func javaScriptNumber(_ value: Double) -> String {
        if value == 0 { return "0" }
        let sign = value < 0 ? "-" : ""
        let swiftText = "\(abs(value))"
        let parts = swiftText.split(separator: "e", maxSplits: 1)
        let exponent = parts.count == 2 ? Int(parts[1])! : 0
        let mantissa = parts[0].split(separator: ".", maxSplits: 1)
        let integerDigits = String(mantissa[0])
        var digits = integerDigits + (mantissa.count == 2 ? String(mantissa[1]) : "")
        // The value is 0.digits × 10^point.
        var point = integerDigits.count + exponent
        while digits.first == "0" {
            digits.removeFirst()
            point -= 1
        }
        while digits.last == "0" { digits.removeLast() }
        let count = digits.count
        if count <= point, point <= 21 { return sign + digits + String(repeating: "0", count: point - count) }
        if 0 < point, point <= 21 {
            return sign + digits.prefix(point) + "." + digits.dropFirst(point)
        }
        if -6 < point, point <= 0 { return sign + "0." + String(repeating: "0", count: -point) + digits }
        let shown = point - 1
        let exponentText = (shown < 0 ? "-" : "+") + String(abs(shown))
        let head = count == 1 ? digits : digits.prefix(1) + "." + digits.dropFirst()
        return sign + head + "e" + exponentText
    }
}
