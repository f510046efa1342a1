// swift-tools-version: 5.9
// A small app on Cairn's Swift API (an iOS app would do the same without the UI).
import PackageDescription

let package = Package(
    name: "TodoApp",
    dependencies: [.package(path: "../../bindings/swift")],
    targets: [.executableTarget(name: "TodoApp", dependencies: [.product(name: "Cairn", package: "swift")])]
)
