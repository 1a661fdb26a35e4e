import Balancer
import Foundation
import Testing

@Suite("Snapshot publisher: readers never wait for a value being built")
struct SnapshotPublisherTests {
    @Test("load() answers at once while update builds the next value, which readers then see in order")
    func loadDoesNotWaitForABuild() async throws {
        let publisher = SnapshotPublisher(1)
        let building = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let builder = Thread {
            publisher.update { old in
                building.signal()
                release.wait()  // a slow build (Maglev tables for many frontends)
                return old + 1
            }
        }
        builder.start()
        building.wait()
        let started = ContinuousClock.now
        let seen = publisher.load()
        #expect(ContinuousClock.now - started < .milliseconds(500), "load() waited for the build")
        #expect(seen.value == 1 && seen.generation == 1)
        release.signal()
        let deadline = ContinuousClock.now + .seconds(5)
        while publisher.generation == 1 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let after = publisher.load()
        #expect(after.value == 2 && after.generation == 2)
        // Publishers stay ordered: each update sees the one before.
        for _ in 0..<100 { publisher.update { $0 + 1 } }
        #expect(publisher.load().value == 102 && publisher.load().generation == 102)
    }
}
