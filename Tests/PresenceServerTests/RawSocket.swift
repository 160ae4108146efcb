import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A WebSocket client by hand on a blocking POSIX socket, so a test can stop
/// reading (a stuck subscriber) and later read every byte the server sent.
final class RawWebSocket {
    let fd: Int32
    /// Bytes read by `readFrame` past the frame it returned.
    private var unread: [UInt8] = []

    /// `source`: the local address to connect from (any of 127.0.0.0/8 on Linux), so a test can be
    /// a client other than the trusted proxy at 127.0.0.1.
    init(
        port: Int, receiveBuffer: Int32 = 4_096, extraHeaders: String = "", handshake: Bool = true, source: String? = nil
    ) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        var size = receiveBuffer
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { throw TestFailure("bind(\(source)) failed") }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw TestFailure("connect() failed") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard handshake else { return }
        try write(Array("GET /api/ws HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(extraHeaders)\r\n".utf8))
        var head: [UInt8] = []
        while !head.suffix(4).elementsEqual([13, 10, 13, 10]) {
            var byte: UInt8 = 0
            guard recv(fd, &byte, 1, 0) == 1 else { throw TestFailure("no handshake response") }
            head.append(byte)
        }
        guard String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 101") else {
            throw TestFailure("handshake refused: \(String(decoding: head, as: UTF8.self))")
        }
    }

    deinit { Glibc.close(fd) }

    /// A heartbeat of one session ("u" in "room"), for tests that need any message the server answers.
    static let heartbeat = #"{"type":"heartbeat","roomId":"room","userId":"u","sessionId":"s","interval":10000}"#

    /// Sends `request` as it is on a new connection and reads the answer to the connection's end
    /// (nil when nothing came back before the read timeout).
    static func exchange(port: Int, _ request: [UInt8], source: String? = nil, timeout: Int = 10) async throws -> String? {
        let socket = try await offThePool { try RawWebSocket(port: port, handshake: false, source: source) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(socket.fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        try socket.write(request)
        return try await offThePool { socket.readToEndOrTimeout() }.map { String(decoding: $0, as: UTF8.self) }
    }

    /// Asks for an upgrade the server refuses: its status and body, read to the connection's end.
    static func refusal(port: Int, target: String, headers: String = "") async throws -> (status: Substring, body: String) {
        let socket = try await offThePool { try RawWebSocket(port: port, handshake: false) }
        try socket.write(Array((
            "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(headers)\r\n").utf8))
        let response = String(decoding: try await offThePool { socket.readToEnd() }, as: UTF8.self)
        let status = response.split(separator: " ", maxSplits: 2).dropFirst().first ?? ""
        return (status, String(response.split(separator: "\r\n\r\n", maxSplits: 1).last ?? ""))
    }

    func write(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw TestFailure("send() failed") }
            offset += sent
        }
    }

    /// Sends one masked text frame, as a client must.
    func sendText(_ text: String) throws {
        try sendFrame(opcode: 1, payload: Array(text.utf8))
    }

    /// Sends one masked frame, final unless `fin` is false (a fragment of a longer message).
    /// `masked: false` breaks RFC 6455 §5.1 on purpose.
    func sendFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool = true) throws {
        try write(Self.clientFrame(opcode: opcode, payload: payload, fin: fin, mask: masked ? [1, 2, 3, 4] : nil))
    }

    /// One frame as a client writes it, in the shortest of the three length encodings; no
    /// `mask` breaks RFC 6455 §5.1.
    static func clientFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true, mask: [UInt8]?) -> [UInt8] {
        var frame: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        if payload.count < 126 {
            frame.append(maskBit | UInt8(payload.count))
        } else if payload.count < 65_536 {
            frame.append(maskBit | 126)
            frame += withUnsafeBytes(of: UInt16(payload.count).bigEndian, Array.init)
        } else {
            frame.append(maskBit | 127)
            frame += withUnsafeBytes(of: UInt64(payload.count).bigEndian, Array.init)
        }
        guard let mask else { return frame + payload }
        frame += mask
        for (index, byte) in payload.enumerated() { frame.append(byte ^ mask[index % 4]) }
        return frame
    }

    /// The next whole frame, or nil when the connection ends (or 10 s pass without data) first.
    func readFrame() -> Frame? {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            if let frame = Self.frames(in: unread).first {
                unread.removeFirst(frame.encodedLength)
                return frame
            }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { return nil }
            unread.append(contentsOf: buffer[0..<count])
        }
    }

    /// Reads until the server closes the connection (or 10 s pass without data).
    func readToEnd() -> [UInt8] {
        var all = unread
        unread = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            all.append(contentsOf: buffer[0..<count])
        }
        return all
    }

    /// The bytes until the server closes the connection, or until the read timeout; nil when
    /// nothing came and the connection is still open (a server that neither answers nor closes).
    func readToEndOrTimeout() -> [UInt8]? {
        var all = unread
        unread = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { return all }
            if count < 0 { return (errno == EAGAIN || errno == EWOULDBLOCK) && all.isEmpty ? nil : all }
            all.append(contentsOf: buffer[0..<count])
        }
    }

    struct Frame {
        let opcode: UInt8
        let payload: [UInt8]
        /// Its bytes on the wire.
        let encodedLength: Int
        var closeCode: UInt16? {
            guard opcode == 8, payload.count >= 2 else { return nil }
            return UInt16(payload[0]) << 8 | UInt16(payload[1])
        }
    }

    /// Splits unmasked server frames; a truncated last frame is dropped.
    static func frames(in bytes: [UInt8]) -> [Frame] {
        var frames: [Frame] = []
        var index = 0
        while index + 2 <= bytes.count {
            let opcode = bytes[index] & 0x0F
            var length = Int(bytes[index + 1] & 0x7F)
            var cursor = index + 2
            if length == 126 {
                guard cursor + 2 <= bytes.count else { break }
                length = Int(bytes[cursor]) << 8 | Int(bytes[cursor + 1])
                cursor += 2
            } else if length == 127 {
                guard cursor + 8 <= bytes.count else { break }
                length = bytes[cursor..<cursor + 8].reduce(0) { $0 << 8 | Int($1) }
                cursor += 8
            }
            guard cursor + length <= bytes.count else { break }
            frames.append(Frame(opcode: opcode, payload: Array(bytes[cursor..<cursor + length]), encodedLength: cursor + length - index))
            index = cursor + length
        }
        return frames
    }
}

extension RawWebSocket: @unchecked Sendable {}
