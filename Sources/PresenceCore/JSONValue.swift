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
    public private(set) var output: String = ""
    /// Whether the next key in the current object needs a comma before it.
    private var needsComma = false

    public init(capacity: Int = 256) {
        output.reserveCapacity(capacity)
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
            output.append(double.isFinite ? String(double) : "null")
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
