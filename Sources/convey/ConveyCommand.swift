import ArgumentParser
import Balancer
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `convey`: the command line of CONFIG.md, the seed's flags included.
@main
struct ConveyCommand: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "convey",
        abstract: "A Layer-4 TCP load balancer: proxy (default), passthrough (full NAT) or dsr over AF_XDP.",
        discussion: """
            Exit status: 0 clean stop, 1 runtime failure, 2 bad usage or bad configuration.
            Stats: http://<[stats] addr>:<port>/ (page), /stats (JSON), /metrics (Prometheus).
            """
    )

    @Option(name: .long, help: ArgumentHelp("Configuration file.", valueName: "file"))
    var config: String = "config.toml"

    @Flag(name: [.customShort("p"), .long], help: "Passthrough mode: full NAT over AF_XDP (root).")
    var passthrough = false

    @Flag(name: [.customShort("d"), .long], help: "DSR mode: direct server return over AF_XDP (root).")
    var dsr = false

    @Option(name: .long, help: ArgumentHelp("Interface for the AF_XDP modes (overrides [xdp] iface).", valueName: "name"))
    var iface: String?

    @Flag(name: .long, help: "Validate the configuration, print it resolved, and exit (0 valid, 2 not).")
    var check = false

    @Option(name: .long, help: ArgumentHelp("trace|debug|info|notice|warning|error", valueName: "level"))
    var logLevel: LogLevelArgument = .info

    @Flag(name: .long, help: ArgumentHelp(
        "Replace a running convey without refusing or resetting a client. Proxy mode: take over the listening sockets of the convey running the same --config (binding beside it where it hands none); stop the old one with SIGTERM once this one logs that it listens. --dsr/--passthrough: take over the interface's sockets, frames and flows from the convey serving --iface, which then exits by itself. /stats comes up when the old one has exited."))
    var takeover = false

    @Flag(name: [.customShort("v"), .customLong("version")], help: "Print the version and exit.")
    var showVersion = false

    var mode: ConveyMode { passthrough ? .passthrough : (dsr ? .dsr : .proxy) }

    func validate() throws {
        if passthrough && dsr { throw ValidationError("--passthrough and --dsr exclude each other: pick one mode") }
        if iface != nil && !passthrough && !dsr {
            throw ValidationError("--iface applies to --passthrough or --dsr only (proxy mode binds its listen_addr)")
        }
    }

    func run() async throws {
        if showVersion {
            print("convey \(Self.version)")
            return
        }
        let logLevel = self.logLevel.level
        LoggingSystem.bootstrap { label in
            var handler = ConveyLogHandler()
            handler.logLevel = logLevel
            return handler
        }
        var logger = Logger(label: "convey")
        logger.logLevel = logLevel

        let loaded: LoadedConfig
        do {
            loaded = try ConfigLoader.load(path: config)
        } catch {
            printError(error.description)
            // Only names that did not resolve: the resolver may be back in a moment (at boot,
            // DNS can come up after convey), so exit 1, which systemd's unit restarts; 2 (a
            // wrong file) it does not.
            if error.problems.allSatisfy(\.isLookupFailure) {
                printError("(exit status 1: the file may be right once the names resolve)")
                throw ExitCode(1)
            }
            throw ExitCode(2)
        }
        var resolvedFile = loaded
        if let iface { resolvedFile.config.xdp.iface = iface }
        let resolved = resolvedFile.config
        let modeProblems = ModeChecks.problems(for: mode, loaded: resolvedFile)
        let warnings = (loaded.warnings + ModeChecks.warnings(for: mode, loaded: resolvedFile))
            .sorted { ($0.line ?? 0) < ($1.line ?? 0) }

        if check {
            // Strict: a warning fails the check too (a typo in a key is the usual cause).
            let marked = warnings.map { w -> ConfigProblem in
                var m = w
                m.message = "warning: " + w.message
                return m
            }
            let all = (modeProblems + marked).sorted { ($0.line ?? 0) < ($1.line ?? 0) }
            if !all.isEmpty {
                var text = all.map(\.description).joined(separator: "\n")
                if modeProblems.isEmpty {
                    text += "\n--check fails on warnings too; convey itself would start and log them"
                }
                printError(text)
                throw ExitCode(2)
            }
            print(ResolvedConfigPrinter.render(resolved, mode: mode, file: config), terminator: "")
            return
        }
        for warning in warnings { logger.warning("\(warning)") }
        guard modeProblems.isEmpty else {
            printError(modeProblems.map(\.description).joined(separator: "\n"))
            throw ExitCode(2)
        }
        do {
            try await Launcher(mode: mode, configPath: config, config: resolved, iface: iface, takeover: takeover, logger: logger,
                               version: Self.version, source: loaded.source).run()
        } catch let failure as LaunchFailure {
            logger.critical("\(failure)")
            throw ExitCode(1)
        }
    }

    /// Maps argument-parser failures to the documented exit codes (2 for bad usage).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            if let exit = error as? ExitCode { Glibc.exit(exit.rawValue) }
            printError(fullMessage(for: error))
            Glibc.exit(code == .validationFailure ? 2 : (code.rawValue == 0 ? 1 : code.rawValue))
        }
    }
}

/// `--log-level` values.
enum LogLevelArgument: String, ExpressibleByArgument, CaseIterable {
    case trace, debug, info, notice, warning, error

    var level: Logger.Level {
        switch self {
        case .trace: .trace
        case .debug: .debug
        case .info: .info
        case .notice: .notice
        case .warning: .warning
        case .error: .error
        }
    }
}

func printError(_ message: String) {
    var text = message
    if !text.hasSuffix("\n") { text += "\n" }
    _ = text.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
}
