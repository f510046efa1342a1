// swift-tools-version: 5.9
// Cairn for Swift: a Swift API over Cairn's C API (cairn.h). The C library is built by CMake;
// bindings/swift/test.sh shows how a build tree is passed in (-Xcc -I, -Xlinker -L/-rpath).
import PackageDescription

#if os(Linux)
// Linux: cairn.h and libcairn.so of a CMake build, through a system library target.
let cCairn: Target = .systemLibrary(name: "CCairn", path: "Sources/CCairn")
#else
// Apple platforms: the XCFramework `platforms/ios/build-xcframework.sh --swift` puts here (the
// same CCairn module, the static library inside). Not built on this project's machines.
let cCairn: Target = .binaryTarget(name: "CCairn", path: "CCairn.xcframework")
#endif

let package = Package(
    name: "Cairn",
    products: [.library(name: "Cairn", targets: ["Cairn"])],
    targets: [
        cCairn,
        .target(name: "Cairn", dependencies: ["CCairn"]),
        .testTarget(name: "CairnTests", dependencies: ["Cairn"]),
    ]
)
