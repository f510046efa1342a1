import Foundation
import XCTest

@testable import Cairn

/// A fresh directory per test, removed afterwards.
func makeTempDir() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-swift-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Runs a program and returns its standard output; throws when it fails.
@discardableResult
func run(_ program: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: program)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw CairnError(code: -1, message: "\(program) \(args) exited with \(p.terminationStatus)")
    }
    return String(decoding: data, as: UTF8.self)
}

/// A real cairn-server (TLS with a CA made for the test, tokens), from the build tree the test
/// command names in CAIRN_SERVER_PATH.
final class TestServer {
    let dir: URL
    let address: String
    let ca: String
    private let process: Process
    private let server: String
    private let secret: String

    init(dir: URL) throws {
        let env = ProcessInfo.processInfo.environment
        guard let server = env["CAIRN_SERVER_PATH"], let certs = env["CAIRN_CERTS_SCRIPT"] else {
            throw XCTSkip("CAIRN_SERVER_PATH and CAIRN_CERTS_SCRIPT are not set")
        }
        self.dir = dir
        self.server = server
        try run("/usr/bin/env", ["python3", certs, dir.path])
        secret = dir.appendingPathComponent("secret").path
        try Data("a-test-secret-of-enough-length-0123456789".utf8).write(to: URL(fileURLWithPath: secret))
        ca = dir.appendingPathComponent("ca.pem").path
        let log = dir.appendingPathComponent("server.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: server)
        process.arguments = ["--db", dir.appendingPathComponent("server.db").path, "--listen", "127.0.0.1:0",
                             "--tls-cert", dir.appendingPathComponent("server.pem").path,
                             "--tls-key", dir.appendingPathComponent("server.key").path,
                             "--token-secret", secret]
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        var found: String?
        for _ in 0..<500 where found == nil {
            Thread.sleep(forTimeInterval: 0.01)
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if let r = text.range(of: #"listening on 127\.0\.0\.1:\d+"#, options: .regularExpression) {
                found = String(text[r].dropFirst("listening on ".count))
            }
        }
        guard let found else {
            process.terminate()
            throw CairnError(code: -1, message: "cairn-server did not start")
        }
        address = found
    }

    deinit {
        process.terminate()  // SIGTERM: the server stops cleanly
        process.waitUntilExit()
    }

    /// `ttlSeconds` nil: the default (a day).
    func token(_ subject: String, write: String? = nil, ttlSeconds: Int? = nil) throws -> String {
        var args = ["token", "--token-secret", secret, "--sub", subject]
        if let write { args += ["--write", write] }
        if let ttlSeconds { args += ["--ttl", String(ttlSeconds)] }
        return try run(server, args).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func options(token: String) -> Sync.Options {
        var o = Sync.Options(server: address, token: token)
        o.caFile = ca
        o.serverName = "localhost"  // the certificate's name (mbedTLS 2.28 does not match IPs)
        return o
    }
}
