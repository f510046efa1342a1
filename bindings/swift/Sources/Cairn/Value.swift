import Foundation

/// A field value (docs/crdt-semantics.md "Data model"): null, a boolean, a 64-bit integer, a
/// double, a string or bytes.
public enum Value: Equatable, Hashable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case bytes([UInt8])
}

extension Value: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
}

extension Value: CustomStringConvertible {
    public var description: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return String(b)
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .string(let s): return s
        case .bytes(let b): return "<\(b.count) bytes>"
        }
    }
}

/// A document's fields, or a query row.
public typealias Fields = [String: Value]

// The engine speaks canonical JSON (docs/crdt-semantics.md): bytes are {"$bytes":"<base64>"}.
enum JSON {
    static func encode(_ v: Value) -> Any {
        switch v {
        case .null: return NSNull()
        case .bool(let b): return b
        case .int(let i): return NSNumber(value: i)
        case .double(let d): return NSNumber(value: d)
        case .string(let s): return s
        case .bytes(let b): return ["$bytes": Data(b).base64EncodedString()]
        }
    }

    static func text(_ object: Any) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.fragmentsAllowed])
        return String(decoding: data, as: UTF8.self)
    }

    static func parse(_ text: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
    }

    static func value(_ any: Any) throws -> Value {
        switch any {
        case is NSNull:
            return .null
        case let s as String:
            return .string(s)
        case let d as [String: Any]:
            if d.count == 1, let b64 = d["$bytes"] as? String, let data = Data(base64Encoded: b64) {
                return .bytes([UInt8](data))
            }
            throw CairnError(code: CairnError.invalidArgument, message: "unexpected JSON object")
        case let n as NSNumber:
            // JSON text kept its kind: "c" true/false, "d"/"f" a number with a fraction or an
            // exponent, the integer types otherwise (an NSDecimalNumber beyond Int64's range).
            switch String(cString: n.objCType) {
            case "c", "B": return .bool(n.boolValue)
            case "d", "f":
                if n is NSDecimalNumber, let i = Int64(n.stringValue) { return .int(i) }
                return .double(n.doubleValue)
            default: return .int(n.int64Value)
            }
        default:
            throw CairnError(code: CairnError.invalidArgument, message: "unexpected JSON value")
        }
    }

    static func fields(_ text: String) throws -> Fields {
        guard let obj = try parse(text) as? [String: Any] else {
            throw CairnError(code: CairnError.invalidArgument, message: "expected a JSON object")
        }
        return try obj.mapValues(value)
    }
}
