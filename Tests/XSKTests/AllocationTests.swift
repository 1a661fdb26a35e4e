import Balancer
import Foundation
import Glibc
import CBenchSupport
import LabSupport
import Testing
import XSK

/// The worker loop's steady state allocates nothing: counted with a malloc-counting shim
/// around thousands of loop iterations over real traffic (RX, the handler, TX, completions).
@Suite(.serialized)
struct AllocationTests {
    @Test("The per-thread allocation counter sees this thread's allocations")
    func threadCounterCounts() {
        let before = cb_thread_allocation_count()
        let array = [Int](repeating: 7, count: 1000)
        withExtendedLifetime(array) { #expect(cb_thread_allocation_count() > before) }
    }

    @Test("The worker loop allocates nothing in the steady state")
    func workerLoopDoesNotAllocate() throws {
        guard try labAvailable("allocations") else { return }
        try Lab.with(backends: 0) { lab in
            let v4 = Endpoint(address: IPAddress("10.77.0.100")!, port: 9000)
            let path = try lab.inNamespace("lb") {
                try XSKDataPath<Reflector>(interface: "veth0", config: XDPConfig(), pinThreads: false,
                                           vips: [(v4, .udp)]) { _ in Reflector() }
            }
            defer { path.stop() }
            let worker = path.allWorkers[0]
            let flood = try lab.spawn("client", ["python3", "-c", Scripts.udpFlood, "10.77.0.100", "9000", "200000", "20"], timeout: 30)
            defer { flood.kill() }

            // Warm up: first frames, lazily initialised runtime state, caches.
            var warm = 0
            for _ in 0..<200 where warm < 500 { warm += worker.runIterations(50) }
            try #require(warm > 0, "no traffic reached the worker")

            var received = 0
            var allocations: UInt64 = 0
            // XSK_LOOP_TRAP=1 under gdb: SIGTRAP before and after the measured loop, so a
            // debugger can count runtime calls (e.g. swift_retain) made in between.
            let trap = ProcessInfo.processInfo.environment["XSK_LOOP_TRAP"] != nil
            if trap { raise(SIGTRAP) }
            // Rounds until enough frames went through (a loaded machine feeds the flood
            // slowly), bounded in rounds and time.
            var rounds = 0
            let deadline = ContinuousClock.now + .seconds(15)
            while rounds < 5 || (received < 1000 && rounds < 200 && ContinuousClock.now < deadline) {
                // This thread's allocations only: other suites may run in parallel.
                let before = cb_thread_allocation_count()
                received += worker.runIterations(400)
                allocations += cb_thread_allocation_count() - before
                rounds += 1
            }
            if trap { raise(SIGTRAP) }
            print("worker loop: \(received) frames in \(rounds * 400) iterations, \(allocations) allocations")
            #expect(received > 500, "enough frames went through the measured loop")
            #expect(allocations == 0, "\(allocations) allocations in \(received) frames")
            let totals = worker.counters.snapshot
            #expect(totals.txPackets > 0)
        }
    }
}
