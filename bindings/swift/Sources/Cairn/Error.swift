import CCairn

/// An error of the Cairn engine: its code (the C API's `CAIRN_E*`, negative) and message.
public struct CairnError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32
    public let message: String

    public static let invalidArgument = CAIRN_EINVAL.rawValue
    public static let notFound = CAIRN_ENOTFOUND.rawValue
    public static let readOnly = CAIRN_EREADONLY.rawValue
    public static let closed = CAIRN_ECLOSED.rawValue
    public static let busy = CAIRN_EBUSY.rawValue
    public static let io = CAIRN_EIO.rawValue
    public static let permission = CAIRN_EPERM.rawValue
    public static let network = CAIRN_ENETWORK.rawValue
    public static let timedOut = CAIRN_ETIMEDOUT.rawValue
    public static let full = CAIRN_EFULL.rawValue
    public static let forked = CAIRN_EFORKED.rawValue
    public static let tokenExpired = CAIRN_ETOKEN.rawValue
    public static let expired = CAIRN_EEXPIRED.rawValue

    public init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }

    /// The code's generic meaning ("invalid argument").
    public var meaning: String { String(cString: cairn_strerror(code)) }

    public var description: String { message.isEmpty ? meaning : message }

    /// The failure of the C call that returned `rc`, on this thread.
    static func last(_ rc: Int32) -> CairnError {
        CairnError(code: rc, message: String(cString: cairn_error_last()))
    }

    static func closedHandle(_ what: String) -> CairnError {
        CairnError(code: closed, message: "\(what) is closed")
    }
}

/// Throws the calling thread's last error when `rc` is not CAIRN_OK.
@inline(__always)
func check(_ rc: Int32) throws {
    if rc != CAIRN_OK.rawValue { throw CairnError.last(rc) }
}

/// Bytes the C API returned, as a String (UTF-8), the buffer released.
func take(_ buf: inout cairn_buf) -> String {
    defer { cairn_buf_dispose(&buf) }
    guard let data = buf.data else { return "" }
    return String(decoding: UnsafeBufferPointer(start: data, count: buf.len), as: UTF8.self)
}
