// swift-tools-version: 5.9
// Cairn for Swift: a Swift API over Cairn's C API (cairn.h). The C library is built by CMake;
// bindings/swift/test.sh shows how a build tree is passed in (-Xcc -I, -Xlinker -L/-rpath).
import PackageDescription

let package = Package(
    name: "Cairn",
    products: [.library(name: "Cairn", targets: ["Cairn"])],
    targets: [
        .systemLibrary(name: "CCairn", path: "Sources/CCairn"),
        .target(name: "Cairn", dependencies: ["CCairn"]),
        .testTarget(name: "CairnTests", dependencies: ["Cairn"]),
    ]
)
