import Balancer
import Glibc
import Logging
import Proxy
import ServiceLifecycle
import Synchronization
import UnixSignals
import XSK

/// Why convey could not start or keep running (exit status 1).
struct LaunchFailure: Error, CustomStringConvertible {
    var description: String
}

/// Builds the shared services and the mode's data plane, and runs them until SIGTERM/SIGINT.
struct Launcher {
    var mode: ConveyMode
    var configPath: String
    var config: ConveyConfig
    /// `--iface`, which outranks `[xdp] iface` at start and on every reload.
    var iface: String?
    /// `--takeover`: replace the running convey (proxy mode: start beside it; the AF_XDP modes:
    /// take its interface over).
    var takeover = false
    var logger: Logger
    var version: String
    /// The text `config` was loaded from.
    var source: String

    func run() async throws {
        // Trapped before anything is set up: until the service group runs, a SIGTERM or
        // SIGHUP would take its default action and kill the process with an XDP program
        // attached. A stop signal that comes early is kept and acted on once the group runs.
        let trapped = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sigquit, .sighup, .sigusr2)
        // Relayed from the start, so that a stop asked while convey sets up is known at once:
        // an AF_XDP takeover then does not commit (the running convey goes on).
        let stopRequest = StopRequest()
        let (signals, relay) = AsyncStream<UnixSignal>.makeStream()
        let relayTask = Task {
            for await signal in trapped {
                if signal == .sigterm || signal == .sigint || signal == .sigquit {
                    stopRequest.asked.store(true, ordering: .releasing)
                }
                relay.yield(signal)
            }
            relay.finish()
        }
        defer { relayTask.cancel() }
        raiseOpenFileLimit()
        // The AF_XDP modes fold their connection counts in every stats period: a drain may
        // end early for holding nothing only once two periods have counted it.
        // Proxy mode counts a server's connection once connected: a connect still in flight
        // (up to connect_timeout) must not see its drain end under it.
        let longestConnect = config.pools.map(\.connectTimeout).max() ?? .zero
        let settle: Duration = mode == .proxy ? max(.seconds(1), longestConnect + .milliseconds(500))
            : config.passthrough.statsUpdateFrequency * 2 + .seconds(1)
        let runtime = BalancerRuntime(config: config, drainSettleTime: settle) { [logger] change in
            switch change.to {
            case .none: logger.error("\(change.message)")
            case .backups: logger.warning("\(change.message)")
            case .servers: logger.notice("\(change.message)")
            }
        }
        let started = ContinuousClock.now
        var services: [any Service] = []

        // Drains come from the stats server's commands: the file is kept only with them on.
        let drainState: DrainStateKeeper? = config.stats.admin ? config.stats.stateFile.map { DrainStateKeeper(file: DrainStateFile(path: $0), logger: logger) } : nil
        if let drainState {
            do throws(DrainStateFileError) { try drainState.restore(into: runtime) } catch {
                throw LaunchFailure(description: "\(error) (set [stats] state_file to a file convey may read and write, or remove it)")
            }
        }
        let readiness = Readiness(notifier: SystemdNotifier(), logger: logger)
        let replacement = InPlaceReplacement(logger: logger, mode: mode, replacementGone: { pid in
            drainState?.successorGone(pid)
            drainState?.sync(runtime)
        })
        let successor = InterfaceSuccessor()
        let dataPlane = try makeDataPlane(runtime: runtime, drainState: drainState, readiness: readiness, replacement: replacement,
                                          successor: successor, stopRequest: stopRequest)

        let health = HealthChecker(targets: HealthTarget.targets(for: config, frontendsSendHeaders: mode == .proxy), logger: logger) { id, status in
            runtime.setHealth(id, up: status.isUp)
        }
        services.append(health)
        services.append(DrainTimer(runtime: runtime))
        if mode == .proxy { services.append(ConnectErrorWatch(runtime: runtime, health: health)) }
        services.append(ReloadService(path: configPath, runtime: runtime, logger: logger, startedWith: source,
                                      overrides: { [iface] candidate in
                                          if let iface { candidate.xdp.iface = iface }
                                      },
                                      check: { [mode, runningNAT = dataPlane.natAddresses] candidate in
                                          // Judged as it would run: start-only settings stay
                                          // as they are.
                                          var effective = candidate
                                          effective.config = runtime.effectiveConfig(candidate.config)
                                          return runtime.reloadProblems(candidate)
                                              + ModeChecks.problems(for: mode, loaded: effective, runningNAT: runningNAT,
                                                                    running: runtime.snapshots.load().value)
                                      },
                                      warnings: { [mode] candidate in ModeChecks.warnings(for: mode, loaded: candidate) },
                                      prepare: dataPlane.prepareReload,
                                      onApplied: { [afterReload = dataPlane.afterReload] applied in
                                          health.update(targets: HealthTarget.targets(for: applied, frontendsSendHeaders: mode == .proxy))
                                          // A server the reload removed takes its drain with it.
                                          drainState?.sync(runtime)
                                          afterReload()
                                      }))

        if config.stats.port != 0 {
            let mode = self.mode, version = self.version, stats = dataPlane.stats, logger = self.logger
            var commands: StatsServer.ServerCommands?
            if config.stats.admin {
                commands = { (id: ServerID, command: ServerCommand, sender: String) throws(ServerCommandError) -> ServerCommandResult in
                    let changed = try runtime.setDrained(id, command == .drain)
                    guard changed else { return ServerCommandResult(changed: false) }
                    let warning = drainState?.sync(runtime)
                    switch command {
                    case .drain:
                        logger.notice("server \(id): drained by the operator (POST /servers/…/drain from \(sender)): it takes no new connections; open ones go on")
                    case .ready:
                        logger.notice("server \(id): the operator's drain ended (POST /servers/…/ready from \(sender)): it takes new connections again")
                    }
                    return ServerCommandResult(changed: true, warning: warning)
                }
            }
            services.append(StatsServer(
                address: Endpoint(address: config.stats.address, port: config.stats.port), logger: logger,
                flows: dataPlane.flows, commands: commands, waitsForAddress: takeover
            ) {
                StatsDocument(view: runtime.view(), mode: mode, uptime: ContinuousClock.now - started,
                              version: version, dataPlane: stats?(),
                              lastCheck: health.allStatuses().mapValues(\.lastResultText))
            })
        }

        // Last, so that it shuts down first (ServiceGroup stops services in reverse order): while
        // it drains, health checks, reloads and /stats keep working.
        services.append(dataPlane.service)

        logger.notice("convey \(version) starting", metadata: [
            "mode": "\(mode.rawValue)", "config": "\(configPath)",
            "frontends": "\(config.frontends.map { "\($0.name)=\($0.listen)" }.joined(separator: ","))",
        ])
        for pool in config.pools {
            for server in pool.servers {
                guard let name = server.hostName else { continue }
                logger.info("server \(pool.name)/\(server.name): '\(name)' resolves to \(server.address.address) (looked up again at each reload)")
            }
        }
        let group = ServiceGroup(configuration: .init(
            // A service that fails (the interface went away, the stats port is taken) stops
            // the others gracefully, as SIGTERM would: each closes cleanly and quietly.
            services: services.map { .init(service: $0, failureTerminationBehavior: .gracefullyShutdownGroup) },
            // The signals trapped above drive the group (see `follow(_:group:)`).
            gracefulShutdownSignals: [],
            cancellationSignals: [],
            logger: logger
        ))
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                tasks.addTask { [logger, mode] in
                    await Self.follow(signals, group: group, logger: logger, mode: mode, replacement: replacement,
                                      successor: successor)
                }
                // The group ends (after a graceful stop, or failing), or SIGQUIT asks to stop
                // at once: then the group is cancelled, which still detaches and closes.
                try await tasks.next()
                tasks.cancelAll()
            }
        } catch {
            throw LaunchFailure(description: "\(error)")
        }
        logger.notice("convey stopped")
    }

    /// Acts on the process's signals until SIGQUIT (returns) or cancellation: SIGTERM and
    /// SIGINT stop gracefully (open connections drain), SIGQUIT stops at once. SIGHUP is the
    /// reload service's; here it is only kept from killing the process before that service
    /// traps it (a file changed meanwhile is reloaded when it starts).
    /// SIGUSR2 replaces convey in place (`InPlaceReplacement`). (No `STOPPING=1`
    /// is sent: systemd knows of the stops it asks for, and with `NotifyAccess=all` one from
    /// a convey that is no longer the unit's main process would stop the unit.)
    private static func follow(_ signals: AsyncStream<UnixSignal>, group: ServiceGroup, logger: Logger, mode: ConveyMode,
                               replacement: InPlaceReplacement?, successor: InterfaceSuccessor) async {
        var stopping = false
        for await signal in signals {
            switch signal {
            case .sigterm, .sigint:
                let pid = successor.pid.load(ordering: .acquiring)
                if pid != 0 {
                    logger.notice("stopping: pid \(pid) serves the interface and its flows now; nothing drains here")
                } else {
                    logger.notice("\(signal): stopping; open connections drain (SIGQUIT stops at once)")
                }
                stopping = true
                await group.triggerGracefulShutdown()
            case .sigquit:
                logger.notice("\(signal): stopping at once")
                return
            case .sigusr2:
                if stopping {
                    logger.warning("SIGUSR2: this convey is stopping (its listeners are closing): not replacing it; start a new one")
                } else if let replacement {
                    replacement.start()
                }
            default:
                continue
            }
        }
    }

    /// Raises the open-file limit to the hard limit and, in proxy mode, warns when it holds
    /// fewer connections than the frontends may take.
    private func raiseOpenFileLimit() {
        let limits: OpenFileLimit.Limits
        do { limits = try OpenFileLimit.raiseToHardLimit() } catch {
            logger.warning("cannot raise the open files limit (RLIMIT_NOFILE): \(error)")
            return
        }
        if limits.now > limits.before {
            logger.info("open files limit raised to the hard limit", metadata: ["from": "\(limits.before)", "to": "\(limits.now)"])
        }
        guard mode == .proxy else { return }
        let capacity = OpenFileLimit.connectionCapacity(limits.now)
        let limited = config.frontends.allSatisfy { $0.maxConnections > 0 }
        let wanted = limited ? UInt64(config.frontends.reduce(0) { $0 + $1.maxConnections }) : 10_000
        // Frontends with max_connections: warn when the limit may not hold them. Unlimited
        // ones: warn only when even idle connections (2 descriptors) would stop short of a
        // few thousand (the hard limit itself is low); otherwise say what it holds at info
        // level, not as a warning on every start.
        let short = limited ? capacity.lowerBound < wanted : capacity.upperBound < 4_096
        if short || capacity.lowerBound < wanted {
            let perConnection = OpenFileLimit.descriptorsPerConnection
            let text = "the open files limit (\(limits.now)) holds \(capacity.lowerBound) to \(capacity.upperBound) proxied "
                + "connections at once (\(perConnection.lowerBound) descriptors each, \(perConnection.upperBound) while moving bulk data)"
                + (limited ? ", fewer than the frontends' max_connections (\(wanted))" : "")
                + ": raise the hard limit (systemd LimitNOFILE=, or nofile in /etc/security/limits.conf)"
            if short { logger.warning("\(text)") } else { logger.info("\(text)") }
        }
    }

    private struct DataPlane {
        var service: any Service
        var stats: DataPlaneStatsSource?
        /// `/flows`.
        var flows: StatsServer.FlowsProvider? = nil
        /// Passthrough: the NAT addresses in use (nil in the other modes).
        var natAddresses: [IPAddress]? = nil
        /// Readies a checked reload (see `ReloadService`'s `prepare`).
        var prepareReload: @Sendable (LoadedConfig) -> [ConfigProblem] = { _ in [] }
        /// Called once a reload is applied.
        var afterReload: @Sendable () -> Void = {}
    }

    private func makeDataPlane(runtime: BalancerRuntime, drainState: DrainStateKeeper?, readiness: Readiness,
                               replacement: InPlaceReplacement?, successor: InterfaceSuccessor,
                               stopRequest: StopRequest) throws -> DataPlane {
        let logger = self.logger
        let drains = OperatorDrains(current: { runtime.view().drained.sorted() }, adopt: { ids, pid in
            for id in ids {
                do throws(ServerCommandError) {
                    try runtime.setDrained(id, true)
                    logger.notice("takeover: server \(id) stays drained, as the operator drained it in the convey being replaced (pid \(pid)); POST /servers/\(id)/ready ends it")
                } catch {
                    logger.warning("takeover: the convey being replaced (pid \(pid)) had server \(id) drained, which this configuration lacks: \(error)")
                }
            }
            drainState?.sync(runtime)
        }, handedOver: { [mode] pid in
            // The AF_XDP data plane stops this convey (SIGTERM to itself) right after.
            if mode != .proxy { successor.pid.store(pid, ordering: .releasing) }
            drainState?.handedOver(to: pid)
            replacement?.handedOver(to: pid)
        })
        switch mode {
        case .proxy:
            let frontends = config.frontends.count, takeover = self.takeover
            let proxy = ProxyService(snapshots: runtime.snapshots, settings: config.proxy, logger: logger, takeover: takeover,
                                     handoverName: ProxyService.handoverName(forConfig: configPath), operatorDrains: drains,
                                     counterCarry: CounterCarry(runtime: runtime), onListening: { [logger] takenFrom in
                // A takeover under systemd (SIGUSR2's replacement) becomes the unit's main
                // process, and only then stops the convey that started it: the unit never
                // sees its main process exit.
                readiness.announce((takeover ? ["MAINPID=\(getpid())"] : [])
                                   + ["READY=1", "STATUS=proxy mode: \(frontends) frontend(s) listening"])
                guard takeover else { return }
                if let takenFrom, takenFrom == InPlaceReplacement.replaced() {
                    logger.notice("takeover: telling the convey this one replaces (pid \(takenFrom)) to stop (SIGTERM): its open connections finish there")
                    kill(takenFrom, SIGTERM)
                } else {
                    // A plain --takeover, or one whose predecessor handed nothing over: the
                    // operator stops the old convey.
                    let pid = takenFrom ?? InPlaceReplacement.replaced()
                    logger.notice("takeover: the convey being replaced\(takenFrom == nil ? " handed nothing over" : "")\(pid.map { " (pid \($0))" } ?? ""); send it SIGTERM now: its open connections finish there")
                }
            })
            return DataPlane(service: proxy, stats: { proxy.dataPlaneStats() },
                             flows: { query throws(FlowQueryError) in try await proxy.listConnections(query) },
                             prepareReload: { candidate in
                do throws(ProxyBindFailures) {
                    try proxy.prepare(frontends: candidate.config.frontends)
                    return []
                } catch {
                    return error.failures.map { failure in
                        guard case .bindFailed(let frontend, _, _) = failure else {
                            return ConfigProblem(file: candidate.file, line: nil, key: nil, message: "\(failure)")
                        }
                        return candidate.problem(path: ["frontends", frontend, "listen_addr"], "\(failure)")
                    }
                }
            }, afterReload: { proxy.wakeLoops() })
        case .passthrough, .dsr:
            do {
                let status = "STATUS=\(mode.rawValue) mode on \(config.xdp.iface ?? "?"): \(config.frontends.count) VIP(s)"
                let takeover = self.takeover
                let running = try XDPDataPlaneSetup.make(mode: mode == .dsr ? .dsr : .passthrough, config: config,
                                                         snapshots: runtime.snapshots, logger: logger, takeover: takeover,
                                                         operatorDrains: drains, counterCarry: CounterCarry(runtime: runtime),
                                                         stopRequested: { stopRequest.asked.load(ordering: .acquiring) },
                                                         onRunning: {
                    // A takeover under systemd becomes the unit's main process once it forwards
                    // (the convey it replaced exits by itself).
                    readiness.announce((takeover ? ["MAINPID=\(getpid())"] : []) + ["READY=1", status])
                })
                return DataPlane(service: running.service, stats: running.stats, flows: running.flows,
                                 natAddresses: mode == .passthrough ? running.natAddresses : nil)
            } catch {
                throw LaunchFailure(description: "cannot start the \(mode.rawValue) data plane: \(error)")
            }
        }
    }
}

/// Ends drains on time: wakes at the next drain deadline (or every second) and lets the runtime
/// republish when a drained server's time is up.
struct DrainTimer: Service {
    let runtime: BalancerRuntime

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            runtime.expireDrains()
            let next = runtime.nextDrainDeadline.map { $0 - ContinuousClock.now } ?? .seconds(1)
            try? await cancelWhenGracefulShutdown {
                try await Task.sleep(for: min(max(next, .milliseconds(20)), .seconds(1)))
            }
        }
    }
}

/// The convey an AF_XDP data plane handed its interface over to (pid 0: none): the stop it
/// then asks of this process has nothing to drain, and says so.
final class InterfaceSuccessor: Sendable {
    let pid = Atomic<Int32>(0)
}

/// Whether a stop signal (SIGTERM, SIGINT, SIGQUIT) has arrived, known from the moment it
/// arrives, before the service group that acts on it runs.
final class StopRequest: Sendable {
    let asked = Atomic<Bool>(false)
}
