import Balancer
import Logging
import Synchronization

/// Keeps the steering program's VIP map equal to the VIPs the routes forward, so frontends a
/// reload adds are steered to the workers at once, and those it removes (or moves away from)
/// go back to the kernel once their drain has ended.
///
/// Runs on the data plane's control task after each routes refresh: a VIP is steered only
/// after the routes that place its flows are published, so its first packets find them. A
/// VIP the map refused is retried on every sync (and logged once).
final class VIPSteering: Sendable {
    private let program: SteeringProgram
    private let logger: Logger
    private let state: Mutex<State>

    private struct State {
        var steered: Set<Endpoint>
        /// VIPs the map refused (full, or a kernel error), each logged once.
        var refused: Set<Endpoint> = []
    }

    /// `steered`: the VIPs the program was given at start.
    init(program: SteeringProgram, steered: [Endpoint], logger: Logger) {
        self.program = program
        self.logger = logger
        state = Mutex(State(steered: Set(steered)))
    }

    /// The VIPs steered now, sorted (for `/stats`).
    var steered: [Endpoint] {
        state.withLock { $0.steered }.sorted { ($0.address.isIPv4 ? 0 : 1, $0.description) < ($1.address.isIPv4 ? 0 : 1, $1.description) }
    }

    /// Steers what `wanted` adds and stops steering what it no longer has.
    func sync(to wanted: Set<Endpoint>) {
        state.withLock { state in
            guard wanted != state.steered else { return }
            for vip in wanted.subtracting(state.steered) {
                do {
                    try program.addVIP(vip)
                    state.steered.insert(vip)
                    state.refused.remove(vip)
                    logger.notice("VIP steered to the workers", metadata: ["vip": "\(vip)"])
                } catch {
                    if state.refused.insert(vip).inserted {
                        logger.error("cannot steer VIP \(vip): \(error); its packets stay with the kernel", metadata: ["vip": "\(vip)"])
                    }
                }
            }
            for vip in state.steered.subtracting(wanted) {
                do {
                    try program.removeVIP(vip)
                    state.steered.remove(vip)
                    logger.notice("VIP no longer steered (its frontend is gone and its drain over)", metadata: ["vip": "\(vip)"])
                } catch {
                    if state.refused.insert(vip).inserted {
                        logger.error("cannot stop steering VIP \(vip): \(error)", metadata: ["vip": "\(vip)"])
                    }
                }
            }
            state.refused.formIntersection(wanted.symmetricDifference(state.steered))
        }
    }
}
