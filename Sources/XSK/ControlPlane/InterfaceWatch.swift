import Balancer
import Logging

/// Watches the interface under a running AF_XDP data plane for changes the data plane cannot
/// follow, and says so once per change instead of leaving an operator to find traffic gone.
///
/// Read once a second by the control loop (`NetworkInterface(named:)`: a few ioctls and an
/// address dump). What it notices:
/// - the interface is gone (deleted, or renamed and its name given to another): fatal, so
///   that convey exits and a supervisor can start it again on what is there now;
/// - an MTU larger than a frame holds: packets above it are dropped by the kernel;
/// - more RX queues than workers: frames hashed to the new ones reach no socket;
/// - a NAT address that left the interface: backends' replies to it stop arriving.
struct InterfaceWatch {
    /// The interface is gone: the data plane cannot run on it.
    struct Lost: Error, CustomStringConvertible {
        var description: String
    }

    let name: String
    let index: Int32
    let frameSize: Int
    /// Workers running (one per RX queue from 0 on), and whether `[passthrough] workers`
    /// chose that number.
    let workers: Int
    let workersCapped: Bool
    /// Passthrough's NAT addresses (empty in DSR).
    let natAddresses: [IPAddress]

    private var mtuTooLarge = false
    private var queues: Int
    private var missingNAT: Set<IPAddress>

    init(interface: NetworkInterface, frameSize: Int, workers: Int, workersCapped: Bool, natAddresses: [IPAddress]) {
        name = interface.name
        index = interface.index
        self.frameSize = frameSize
        self.workers = workers
        self.workersCapped = workersCapped
        self.natAddresses = natAddresses
        queues = interface.rxQueueCount
        // Those not on the interface at start were warned about then.
        missingNAT = Set(natAddresses.filter { !interface.has($0) })
    }

    /// Reads the interface and logs what changed; throws `Lost` when it is gone.
    mutating func check(logger: Logger) throws(Lost) {
        let now: NetworkInterface
        do { now = try NetworkInterface(named: name) } catch {
            throw Lost(description: "\(name) is gone (\(error)): the XDP program and sockets went with it; "
                       + "convey stops so that it can be started again (systemd restarts it)")
        }
        guard now.index == index else {
            throw Lost(description: "\(name) was deleted and created again (index \(index) -> \(now.index)): the XDP "
                       + "program and sockets went with the old one; convey stops so that it can be started again "
                       + "(systemd restarts it)")
        }
        observe(now, logger: logger)
    }

    /// Compares `now` with what was seen before and logs each change once.
    private mutating func observe(_ now: NetworkInterface, logger: Logger) {
        let largest = UMEM.largestMTU(frameSize: frameSize)
        let tooLarge = now.mtu > largest
        if tooLarge != mtuTooLarge {
            mtuTooLarge = tooLarge
            if tooLarge {
                logger.error("\(name)'s MTU is now \(now.mtu), above the \(largest) bytes convey's AF_XDP frames hold: steered packets larger than that are dropped by the kernel (counted in the rings' rx_dropped); lower the MTU, or restart convey, which sizes its frames for the MTU at start (up to \(UMEM.largestMTU(frameSize: 4096)))")
            } else {
                logger.notice("\(name)'s MTU is now \(now.mtu): every packet fits convey's frames again")
            }
        }
        if now.rxQueueCount != queues {
            queues = now.rxQueueCount
            if let text = XDPDataPlaneSetup.uncoveredQueuesWarning(interface: name, rxQueues: queues, rssSpan: now.rssQueueSpan(),
                                                                  workers: workers, capped: workersCapped) {
                logger.error("\(name) now has \(queues) RX queues. \(text)")
            } else {
                logger.notice("\(name) now has \(queues) RX queues", metadata: ["workers": "\(workers)"])
            }
        }
        for address in natAddresses {
            let present = now.has(address)
            if !present && !missingNAT.contains(address) {
                missingNAT.insert(address)
                logger.error("NAT address \(address) is no longer an address of \(name): backends' replies to it stop arriving unless this host still answers ARP/ND for it; add it back (ip addr add \(address)/\(address.isIPv4 ? 32 : 128) dev \(name)) or set [xdp] nat_addr and restart convey")
            } else if present && missingNAT.contains(address) {
                missingNAT.remove(address)
                logger.notice("NAT address \(address) is an address of \(name) again")
            }
        }
    }
}
