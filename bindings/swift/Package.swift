// swift-tools-version: 5.9
// Cairn for Swift: a Swift API over Cairn's C API (cairn.h). The C library is built by CMake;
// bindings/swift/CMakeLists.txt shows how a build tree is passed in (-Xcc -I, -Xlinker -L/-rpath).
import Foundation
import PackageDescription

// The CCairn module over cairn.h. Where `platforms/ios/build-xcframework.sh --swift` has put
// CCairn.xcframework here (on a Mac, for iOS apps: device and simulator slices, the static
// library inside), the package takes it; otherwise (Linux, or a Mac building for itself) it is a
// system library: cairn.h and libcairn of a CMake build, passed in with -Xcc -I / -Xlinker -L.
let xcframework = Context.packageDirectory + "/CCairn.xcframework"
let cCairn: Target = FileManager.default.fileExists(atPath: xcframework)
    ? .binaryTarget(name: "CCairn", path: "CCairn.xcframework")
    : .systemLibrary(name: "CCairn", path: "Sources/CCairn")

let package = Package(
    name: "Cairn",
    products: [.library(name: "Cairn", targets: ["Cairn"])],
    targets: [
        cCairn,
        .target(name: "Cairn", dependencies: ["CCairn"]),
        .testTarget(name: "CairnTests", dependencies: ["Cairn"]),
    ]
)
