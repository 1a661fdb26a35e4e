#if canImport(Glibc)
import Glibc
#endif
import Balancer
import CXDP
import SystemPackage

/// A takeover of an AF_XDP data plane, the newcomer's side (`convey --takeover --dsr|--passthrough`).
///
/// The running convey keeps its claim on the interface (`InterfaceClaim`) listening; the
/// newcomer connects there and the two talk in short messages:
///
///     new → old   convey-xdp-takeover 1
///     old → new   facts pid=… mode=… attach=… workers=… [nat=… ports=…] sockets-first=1
///     new → old   sockets?               (or: abort REASON, when the facts do not fit)
///     old → new   sockets Q,Q,…  + [each worker's socket, the claim's listening socket]
///     new         loads its own program with those sockets in its XSKMAP and swaps it in
///                 (XDP_FLAGS_REPLACE) while the old workers forward on; makes its tables
///     new → old   pause counters         (or: pause, when the facts lack `counters=1`)
///     old         stops its workers between two iterations, keeps its program attached
///     old → new   worker I   + [socket, UMEM memfd, document memfd]   (one per worker; the
///                 document: `WorkerDocument`, its frames, flows and free NAT ports)
///     old → new   claim      + [the claim's listening socket]
///     old → new   drained\nPOOL\nNAME   (one per server the operator drained at runtime)
///     old → new   counters   + [memfd]   (asked for: its counters, `CarriedCounters`, read
///                                         with the workers paused, so they are final)
///     old → new   paused
///     new         maps the rings and frames, enters the carried flows
///     new → old   start?
///     old → new   go                     (from here the old one never takes anything back)
///     new         starts its workers, tells a service manager it is the main process now
///     new → old   started                (the old one exits without detaching anything)
///
/// (A running convey from before 2026-12-08 sends no `sockets-first=1`; the newcomer then asks
/// `pause` at once and loads and swaps its program in while paused, with the sockets it got
/// there, its `claim` message.)
///
/// Frames keep arriving in the sockets' RX rings throughout; no socket is closed and no
/// program detached, so nothing reaches the kernel's stack in between. While paused, the
/// RX rings hold what arrives (4096 frames each by default; beyond that the kernel drops,
/// counted in `rx_dropped`). Until it sends `go` the old one can still go back: any other
/// answer, an early close or 10 s of silence puts its own program back (if the newcomer had
/// swapped it) and resumes its workers, and the newcomer fails with the reason.
public final class XDPTakeover: @unchecked Sendable {
    static let greeting = "convey-xdp-takeover 1"
    /// Asks for the sockets and the claim before the pause (`XDPTakeoverFacts.handsSocketsFirst`).
    static let socketsRequest = "sockets?"
    /// Asks for the pause and the counters (`XDPTakeoverFacts.handsCounters`).
    static let pauseWithCounters = "pause counters"
    /// How long either side waits for the other's next message.
    static let timeout: Duration = .seconds(10)

    public let facts: XDPTakeoverFacts
    private let connection: UnixMessageSocket
    private let interface: NetworkInterface

    /// What the running convey handed over after `pause`.
    public struct Handed {
        public var workers: [XSKWorkerHandover.Received]
        /// What each worker's forwarder carries, in worker order.
        public var forwarders: [ForwarderHandover]
        /// The claim's listening socket.
        public var claimFD: Int32
        /// The servers the operator had drained in the running convey.
        public var drained: [ServerID]
        /// Its counters as sent (`CarriedCounters`, read once the newcomer forwards, out of
        /// the pause); nil: it handed none (being older, or unable to), or see `countersProblem`.
        public var countersDocument: [UInt8]?
        /// Why the counters it sent were not taken (the takeover goes on without them).
        public var countersProblem: String?
    }

    /// Connects to the convey serving `interface` and reads its facts.
    public init(interface: NetworkInterface) throws(XDPStartError) {
        self.interface = interface
        let name = InterfaceClaim.name(interface)
        do throws(Errno) {
            connection = try UnixMessageSocket.connected(to: name, timeout: Self.timeout)
        } catch {
            throw XDPStartError("--takeover: no convey serves \(interface.name) to take over (nothing answers at @\(name): "
                                + "\(error)); start without --takeover (a convey older than 2026-12-07 serving it "
                                + "cannot hand it over: stop it first)")
        }
        do {
            try connection.send(Array(Self.greeting.utf8))
            let answer = try connection.receive()
            let text = String(decoding: answer.bytes, as: UTF8.self)
            Self.close(answer.descriptors)
            if text.hasPrefix("refused ") {
                throw XDPStartError("--takeover: the convey serving \(interface.name) refused: \(text.dropFirst(8))")
            }
            guard let facts = XDPTakeoverFacts(message: text) else {
                throw XDPStartError("--takeover: the process holding @\(name) answered \(text.isEmpty ? "nothing" : "'\(text.prefix(80))'"): "
                                    + "not a convey that hands its interface over (an older one? stop it and start this one instead)")
            }
            self.facts = facts
        } catch let error as XDPStartError {
            throw error
        } catch {
            throw XDPStartError("--takeover: talking to the convey serving \(interface.name) failed: \(error)")
        }
    }

    /// The running convey has closed the connection: it stopped waiting (its timeout) and went
    /// on with its own program, which this one must then not replace.
    public var runningConveyLeft: Bool { connection.peerHasClosed }

    /// Tells the running convey this one will not take over (it goes on as before).
    public func abort(_ reason: String) {
        try? connection.send(Array("abort \(reason)".utf8))
    }

    /// The running convey's sockets, sent before the pause.
    public struct Sockets {
        /// Each worker's AF_XDP socket with its queue (the caller closes them).
        public var sockets: [(queue: UInt32, fd: Int32)]
        /// The claim's listening socket.
        public var claimFD: Int32
    }

    /// Asks the running convey (one with `handsSocketsFirst`) for its sockets and claim; it
    /// keeps forwarding.
    public func sockets() throws(XDPStartError) -> Sockets {
        var received: [Int32] = []
        do {
            try connection.send(Array(Self.socketsRequest.utf8))
            let message = try connection.receive()
            received = message.descriptors
            let text = String(decoding: message.bytes, as: UTF8.self)
            let queues = text.hasPrefix("sockets ") ? text.dropFirst(8).split(separator: ",").compactMap { UInt32($0) } : []
            guard queues.count == facts.workers, message.descriptors.count == queues.count + 1 else {
                throw HandoverFormatError("it answered '\(text.prefix(60))' with \(message.descriptors.count) descriptor(s)")
            }
            return Sockets(sockets: Array(zip(queues, message.descriptors.dropLast())).map { (queue: $0.0, fd: $0.1) },
                           claimFD: message.descriptors[queues.count])
        } catch {
            Self.close(received)
            throw XDPStartError("--takeover: the sockets of the convey serving \(interface.name) (pid \(facts.pid)) did not "
                                + "arrive: \(error); it goes on")
        }
    }

    /// Asks the running convey to pause and hand its workers over.
    public func pause() throws(XDPStartError) -> Handed {
        var workers: [XSKWorkerHandover.Received] = []
        var forwarders: [ForwarderHandover] = []
        var claim: Int32?
        var drained: [ServerID] = []
        var countersDocument: [UInt8]?
        var countersProblem: String?
        var received: [Int32] = []
        func fail(_ text: String) -> XDPStartError {
            Self.close(received)
            return XDPStartError("--takeover: \(text); the convey serving \(interface.name) (pid \(facts.pid)) goes on")
        }
        do {
            try connection.send(Array((facts.handsCounters ? Self.pauseWithCounters : "pause").utf8))
            while true {
                let message = try connection.receive()
                received += message.descriptors
                let text = String(decoding: message.bytes, as: UTF8.self)
                if text == "paused" { break }
                if text.isEmpty && message.descriptors.isEmpty { throw fail("the running convey closed the connection") }
                if text.hasPrefix("refused ") { throw fail("it refused: \(text.dropFirst(8))") }
                if text == "claim", message.descriptors.count == 1 {
                    claim = message.descriptors[0]
                } else if text.hasPrefix("drained\n"), message.descriptors.isEmpty {
                    let parts = text.split(separator: "\n", omittingEmptySubsequences: false)
                    if parts.count == 3 { drained.append(ServerID(pool: String(parts[1]), name: String(parts[2]))) }
                } else if text == "counters" {
                    // Never worth failing the takeover for.
                    guard message.descriptors.count == 1 else {
                        countersProblem = "they came with \(message.descriptors.count) descriptors instead of one"
                        continue
                    }
                    let file = FileDescriptor(rawValue: message.descriptors[0])
                    received.removeAll { $0 == file.rawValue }
                    defer { try? file.close() }
                    do throws(Errno) { countersDocument = try MemoryFile.contents(of: file) } catch {
                        countersProblem = "\(error)"
                    }
                } else if text.hasPrefix("worker "), message.descriptors.count == 3 {
                    let document = try WorkerDocument.read(memfd: message.descriptors[2])
                    Glibc.close(message.descriptors[2])
                    received.removeAll { $0 == message.descriptors[2] }
                    do {
                        let (worker, forwarder) = try WorkerDocument.decode(document)
                        forwarders.append(forwarder)
                        workers.append(XSKWorkerHandover.Received(worker: worker, socketFD: message.descriptors[0],
                                                                  memoryFD: message.descriptors[1]))
                    } catch {
                        throw HandoverFormatError("worker \(workers.count)'s hand-over does not read: \(error)")
                    }
                } else {
                    throw fail("unexpected message '\(text.prefix(60))'")
                }
            }
        } catch let error as XDPStartError {
            throw error
        } catch {
            throw fail("\(error)")
        }
        guard let claim, workers.count == facts.workers else {
            throw fail("the hand-over was incomplete (\(workers.count) of \(facts.workers) workers\(claim == nil ? ", no claim" : ""))")
        }
        return Handed(workers: workers, forwarders: forwarders, claimFD: claim, drained: drained,
                      countersDocument: countersDocument, countersProblem: countersProblem)
    }

    /// Asks the running convey to let go for good; once it answers `go` it has stopped and
    /// this one owns the interface. Throws when it did not.
    public func commit() throws(XDPStartError) {
        do {
            try connection.send(Array("start?".utf8))
            let answer = try connection.receive()
            Self.close(answer.descriptors)
            guard String(decoding: answer.bytes, as: UTF8.self) == "go" else {
                throw XDPStartError("--takeover: the convey serving \(interface.name) (pid \(facts.pid)) did not let go; it goes on")
            }
        } catch let error as XDPStartError {
            throw error
        } catch {
            throw XDPStartError("--takeover: the convey serving \(interface.name) (pid \(facts.pid)) did not let go (\(error)); it goes on")
        }
    }

    /// Tells the convey that let go that this one forwards (and, under systemd, is the unit's
    /// main process): it exits now. The connection closes.
    public func started() {
        try? connection.send(Array("started".utf8))
    }

    static func close(_ fds: [Int32]) { for fd in fds { Glibc.close(fd) } }
}
