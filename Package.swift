// swift-tools-version: 6.0
import PackageDescription

/// Convey: a Layer-4 TCP load balancer for Linux (proxy, passthrough and DSR modes).
///
/// Module boundaries (see DESIGN.md): Balancer imports neither Proxy nor XSK; Proxy and XSK
/// import Balancer and never each other; CLinux and CXDP are the only C.
let package = Package(
    name: "convey",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "convey", targets: ["convey"]),
        .executable(name: "XSKReflect", targets: ["XSKReflect"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // Thin C shims for Linux syscalls that Glibc does not import cleanly
        // (epoll flags, splice, pipe2, inotify, sched affinity).
        .target(name: "CLinux"),
        // System library over libxdp/libbpf and <linux/if_xdp.h>.
        .systemLibrary(
            name: "CXDP",
            pkgConfig: "libxdp",
            providers: [.apt(["libxdp-dev", "libbpf-dev"])]
        ),
        .target(
            name: "Balancer",
            dependencies: [
                "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        .target(
            name: "Proxy",
            dependencies: [
                "Balancer", "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "XSK",
            dependencies: [
                "Balancer", "CLinux", "CXDP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The steering program is compiled to BPF and embedded by the BPFEmbed plugin.
            exclude: ["Program/steer.bpf.c"],
            plugins: ["BPFEmbed"]
        ),
        // Build-time only: compiles `*.bpf.c` with the toolchain's clang and embeds the object.
        .plugin(name: "BPFEmbed", capability: .buildTool(), dependencies: ["BPFEmbedTool"]),
        .executableTarget(name: "BPFEmbedTool"),
        // AF_XDP reflector (benchmark subject): `XSKReflect --iface veth0 --vip 10.77.0.100:80`.
        .executableTarget(name: "XSKReflect", dependencies: ["XSK", "Balancer"]),
        // Lab helpers shared by test targets: namespace labs via lab/lab.sh, setns threads.
        .target(name: "LabSupport", dependencies: ["CXDP"], path: "Tests/LabSupport"),
        .executableTarget(
            name: "convey",
            dependencies: [
                "Balancer", "Proxy", "XSK", "CLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // Benchmarks (not tests): `swift run -c release ConveyBench`; see bench/README.md.
        .executableTarget(name: "ConveyBench", dependencies: ["Balancer", "XSK", "CBenchSupport"],
                          path: "bench/ConveyBench"),
        // Benchmark-only C: a counting malloc shim. Linked into ConveyBench only.
        .target(name: "CBenchSupport", path: "bench/CBenchSupport"),
        .testTarget(
            name: "BalancerTests",
            dependencies: [
                "Balancer",
                // Health-check tests run real loopback servers (NIO) and capture log lines.
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "ProxyTests", dependencies: ["Proxy", "Balancer"]),
        // XSKTests links CBenchSupport's counting malloc (the allocation-free worker loop test);
        // it forwards to glibc's allocator, so the other tests are unaffected.
        .testTarget(name: "XSKTests", dependencies: ["XSK", "Balancer", "LabSupport", "CBenchSupport"]),
        // Runs the built `convey` binary as an operator would (it depends on it to get it built).
        .testTarget(name: "ConveyTests", dependencies: ["convey", "LabSupport"], exclude: ["configs"]),
    ],
    swiftLanguageModes: [.v6]
)
