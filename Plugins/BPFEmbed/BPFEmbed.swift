import Foundation
import PackagePlugin

/// Build-tool plugin: compiles every `*.bpf.c` file in the target's directory with the
/// toolchain's clang (`-O2 -g -target bpf`) and generates a Swift file that holds the object's
/// bytes, so the binary embeds its BPF programs (no object file to install or find at run time).
///
/// The `.bpf.c` files must be excluded from the target's sources. Headers shared with Swift
/// live in `Sources/CXDP` and are on the include path.
@main
struct BPFEmbed: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let packageDir = context.package.directoryURL
        // `Target.directoryURL` needs tools version 6.1; targets using this plugin keep the
        // conventional `Sources/<name>` folder.
        let targetDir = packageDir.appending(path: "Sources/\(target.name)")
        let cxdpDir = packageDir.appending(path: "Sources/CXDP")
        let clang = try Self.findClang(context: context)
        let embedTool = try context.tool(named: "BPFEmbedTool").url

        var sources: [URL] = []
        let enumerator = FileManager.default.enumerator(at: targetDir, includingPropertiesForKeys: nil)
        while let url = enumerator?.nextObject() as? URL {
            if url.lastPathComponent.hasSuffix(".bpf.c") { sources.append(url) }
        }
        let headers = ((try? FileManager.default.contentsOfDirectory(at: cxdpDir, includingPropertiesForKeys: nil)) ?? [])
            .filter { $0.pathExtension == "h" }

        var commands: [Command] = []
        for source in sources.sorted(by: { $0.path < $1.path }) {
            let base = String(source.lastPathComponent.dropLast(".bpf.c".count))
            let object = context.pluginWorkDirectoryURL.appending(path: "\(base).bpf.o")
            let swift = context.pluginWorkDirectoryURL.appending(path: "\(base)BPFObject.swift")
            commands.append(.buildCommand(
                displayName: "Compiling BPF \(source.lastPathComponent)",
                executable: clang,
                arguments: ["-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
                            "-I/usr/include/x86_64-linux-gnu", "-I/usr/include/aarch64-linux-gnu",
                            "-I\(cxdpDir.path)", "-c", source.path, "-o", object.path],
                inputFiles: [source] + headers,
                outputFiles: [object]))
            commands.append(.buildCommand(
                displayName: "Embedding BPF \(base).bpf.o",
                executable: embedTool,
                arguments: [object.path, swift.path, Self.symbolName(base)],
                inputFiles: [object],
                outputFiles: [swift]))
        }
        return commands
    }

    /// `steer` → `steerBPFObject`.
    static func symbolName(_ base: String) -> String {
        let cleaned = base.map { $0.isLetter || $0.isNumber ? $0 : "_" }
        return String(cleaned) + "BPFObject"
    }

    /// The toolchain's clang (it has the BPF backend), else the first clang on PATH.
    static func findClang(context: PluginContext) throws -> URL {
        if let tool = try? context.tool(named: "clang") { return tool.url }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        for dir in ["/opt/swift/usr/bin"] + path.split(separator: ":").map(String.init) {
            let candidate = URL(fileURLWithPath: dir).appending(path: "clang")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw BPFEmbedError.noClang
    }
}

enum BPFEmbedError: Error, CustomStringConvertible {
    case noClang
    var description: String { "BPFEmbed: no clang found (the Swift toolchain's clang compiles BPF)" }
}
