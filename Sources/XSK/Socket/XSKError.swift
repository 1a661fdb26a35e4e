import SystemPackage

/// Why setting up or running the AF_XDP data path failed. Every message names the interface
/// (and queue, where there is one) and, where an operator can act, says how.
public enum XSKError: Error, CustomStringConvertible, Equatable {
    /// A system or library call failed: `operation` names the C function, `subject` what it
    /// was applied to (e.g. "veth0 queue 0").
    case system(operation: String, subject: String, errno: Errno)
    /// The interface does not exist in this network namespace.
    case noSuchInterface(String)
    /// `zero_copy = on`, but the driver offers no AF_XDP zero-copy.
    case zeroCopyUnsupported(interface: String, driver: String)
    /// A foreign XDP program is attached; Convey will not replace it.
    /// `detach`: the `ip link` keyword of the mode it is attached in (`xdp`, `xdpgeneric`,
    /// `xdpoffload`): `ip link set dev IFACE <keyword> off` removes it.
    case foreignProgram(interface: String, programs: [String], detach: String = "xdp")
    /// The embedded steering object could not be opened or loaded.
    case program(step: String, errno: Errno)
    /// A map of the steering program is missing (object and header out of step).
    case missingMap(String)
    /// A configuration value cannot be used (e.g. a queue beyond the interface's queues).
    case invalidArgument(String)
    /// Another running convey serves the interface (`pid` when it could be read).
    case interfaceInUse(interface: String, pid: Int32?)

    public var description: String {
        switch self {
        case let .system(operation, subject, errno):
            return "\(operation) on \(subject) failed: \(errno) (errno \(errno.rawValue))"
        case let .noSuchInterface(name):
            return "no network interface named '\(name)' in this network namespace"
        case let .zeroCopyUnsupported(interface, driver):
            return "zero_copy = on, but \(interface) (driver \(driver)) has no AF_XDP zero-copy support; "
                + "set zero_copy = auto or off in [xdp]"
        case let .foreignProgram(interface, programs, detach):
            return "\(interface) already has an XDP program (\(programs.joined(separator: ", "))) that is not "
                + "Convey's; refusing to replace it. Remove it first: `ip link set dev \(interface) \(detach) off` "
                + "(or `xdp-loader unload \(interface) --all` if it was loaded with libxdp)"
        case let .program(step, errno):
            return "steering program: \(step) failed: \(errno) (errno \(errno.rawValue))"
        case let .missingMap(name):
            return "steering program: map '\(name)' not found in the embedded object"
        case let .invalidArgument(text):
            return text
        case let .interfaceInUse(interface, pid):
            let holder = pid.map { " (pid \($0))" } ?? ""
            return "\(interface) is already served by another convey\(holder); refusing to replace its steering "
                + "program. Stop that one first, replace it with convey --takeover (which carries its flows over), "
                + "or give this one another interface"
        }
    }

    /// Builds `.system` from a negative errno return value (libbpf/libxdp style).
    static func fromNegative(_ rc: Int32, _ operation: String, _ subject: String) -> XSKError {
        .system(operation: operation, subject: subject, errno: Errno(rawValue: rc < 0 ? -rc : rc))
    }
}
