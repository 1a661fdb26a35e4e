// XSKReflect --iface IFACE [--queue N] [--seconds S] [--vip ip:port]... [--attach auto|native|skb]
//            [--zero-copy auto|on|off]
//
// Attaches Convey's steering program to IFACE with the given VIPs (TCP and UDP), reflects every
// steered frame back to its sender (MACs, IPs and ports swapped) with one AF_XDP worker per RX
// queue (or only queue N), and on SIGINT/SIGTERM or after S seconds stops, detaches the program
// and prints its counters. The benchmark's subject, measured against a C AF_XDP reflector.
import Balancer
import Glibc
import XSK

struct Options {
    var iface = ""
    var queue: UInt32?
    var seconds: Double?
    var vips: [Endpoint] = []
    var attach = XDPConfig.AttachMode.auto
    var zeroCopy = XDPConfig.ZeroCopyMode.auto
}

/// Writes a line to standard error.
func printError(_ message: String) {
    let line = message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

func fail(_ message: String, code: Int32 = 2) -> Never {
    printError("XSKReflect: \(message)")
    exit(code)
}

func parse(_ args: [String]) -> Options {
    var o = Options()
    var i = 0
    func value() -> String {
        i += 1
        guard i < args.count else { fail("\(args[i - 1]) needs a value") }
        return args[i]
    }
    while i < args.count {
        switch args[i] {
        case "--iface": o.iface = value()
        case "--queue":
            guard let q = UInt32(value()) else { fail("--queue needs a number") }
            o.queue = q
        case "--seconds":
            guard let s = Double(value()), s > 0 else { fail("--seconds needs a positive number") }
            o.seconds = s
        case "--vip":
            let text = value()
            do { o.vips.append(try Endpoint(parsing: text)) } catch { fail("--vip \(text): \(error)") }
        case "--attach":
            guard let m = XDPConfig.AttachMode(rawValue: value()) else { fail("--attach: auto, native or skb") }
            o.attach = m
        case "--zero-copy":
            guard let m = XDPConfig.ZeroCopyMode(rawValue: value()) else { fail("--zero-copy: auto, on or off") }
            o.zeroCopy = m
        case "-h", "--help":
            print("usage: XSKReflect --iface IFACE [--queue N] [--seconds S] [--vip ip:port]... [--attach auto|native|skb] [--zero-copy auto|on|off]")
            exit(0)
        default:
            fail("unknown argument \(args[i])")
        }
        i += 1
    }
    if o.iface.isEmpty { fail("--iface is required") }
    return o
}

let options = parse(Array(CommandLine.arguments.dropFirst()))

// Signals are taken synchronously by this thread (blocked before any worker thread exists,
// so the workers inherit the mask).
var signals = sigset_t()
sigemptyset(&signals)
sigaddset(&signals, SIGINT)
sigaddset(&signals, SIGTERM)
pthread_sigmask(SIG_BLOCK, &signals, nil)

let vips = options.vips.flatMap { [($0, SteeringProgram.TransportProtocol.tcp), ($0, .udp)] }
let dataPath: XSKDataPath<Reflector>
do {
    dataPath = try XSKDataPath(interface: options.iface,
                               config: XDPConfig(iface: options.iface, attach: options.attach, zeroCopy: options.zeroCopy),
                               queues: options.queue.map { [$0] }, vips: vips) { _ in Reflector() }
    try dataPath.start()
} catch {
    fail("\(error)", code: 1)
}

let stats0 = dataPath.stats()
printError("XSKReflect: \(options.iface): \(stats0.workers.count) worker(s), attach \(stats0.attachMode.rawValue), "
      + "\(stats0.zeroCopy ? "zero-copy" : "copy mode"), VIPs \(options.vips.map(\.description).joined(separator: " "))")

var deadline = timespec()
clock_gettime(CLOCK_MONOTONIC, &deadline)
let end = options.seconds.map { Double(deadline.tv_sec) + Double(deadline.tv_nsec) / 1e9 + $0 }
while true {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let t = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    if let end, t >= end { break }
    var wait = timespec(tv_sec: 0, tv_nsec: 200_000_000)
    if let end, end - t < 0.2 { wait.tv_nsec = max(1, Int((end - t) * 1e9)) }
    if sigtimedwait(&signals, nil, &wait) > 0 { break }
}

dataPath.stop()
let stats = dataPath.stats()
let t = stats.totals
let r = stats.ringTotals
var reflected: UInt64 = 0
var dropped: UInt64 = 0
for worker in dataPath.allWorkers {
    reflected += worker.finalHandler.reflected
    dropped += worker.finalHandler.dropped
}
print("""
    interface \(stats.interface) attach \(stats.attachMode.rawValue) \(stats.zeroCopy ? "zero-copy" : "copy")
    rx_packets \(t.rxPackets) rx_bytes \(t.rxBytes) tx_packets \(t.txPackets) drops \(t.drops) tx_ring_full \(t.txRingFullDrops) batches \(t.batches) wakeups \(t.wakeups)
    reflected \(reflected) not_reflected \(dropped)
    ring rx_dropped \(r.rxDropped) rx_invalid_descs \(r.rxInvalidDescriptors) tx_invalid_descs \(r.txInvalidDescriptors) rx_ring_full \(r.rxRingFull) rx_fill_ring_empty_descs \(r.rxFillRingEmptyDescriptors) tx_ring_empty_descs \(r.txRingEmptyDescriptors)
    """)
if let v = stats.verdicts {
    print("verdicts redirected_vip \(v.redirectedVIP) redirected_nat \(v.redirectedNAT) passed_not_ip \(v.passedNotIP) passed_not_steered \(v.passedNotSteered) passed_vlan \(v.passedVLAN) passed_fragment \(v.passedFragment) passed_ext_header \(v.passedExtensionHeader) passed_no_socket \(v.passedNoSocket) malformed \(v.malformed)")
}
